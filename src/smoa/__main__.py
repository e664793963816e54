from .cli import main

main(prog_name="smoa")  # `python -m smoa` names itself as the installed command does

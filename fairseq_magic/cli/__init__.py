


def run_main(main, prog: str) -> None:
    """Console-script wrapper: exit with ``main()``'s code; a bad input
    (``MagicConfigError``) becomes one ``PROG: error: ...`` line and exit 2, as
    argparse reports bad flags, instead of a traceback."""
    import sys

    from ..core.space import MagicConfigError

    try:
        sys.exit(main())
    except MagicConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)

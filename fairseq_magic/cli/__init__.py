


def run_main(main, prog: str, runtime_errors: bool = False) -> None:
    """Console-script wrapper: exit with ``main()``'s code; a bad input
    (``MagicConfigError``) becomes one ``PROG: error: ...`` line and exit 2, as
    argparse reports bad flags, instead of a traceback. With ``runtime_errors``,
    a ``RuntimeError`` (a failed step the tool already explained, e.g. a
    fine-tuning run whose log it points to) becomes one line and exit 1."""
    import sys

    from ..core.space import MagicConfigError

    try:
        sys.exit(main())
    except MagicConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as e:
        if not runtime_errors:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)

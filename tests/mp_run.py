"""`python tests/mp_run.py AUDIT_FILE gsd.main flags...`: gsd's command line with a Python audit hook that
appends every file this process opens for writing to AUDIT_FILE (one path a line), so a test can check
which process wrote what. (Files written by C++ libraries, orbax's tensorstore data say, are not seen.)"""

import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _hook(audit_path):
    log = open(audit_path, 'a', buffering=1)  # noqa: SIM115 - open for the whole run
    own = os.path.abspath(audit_path)

    def hook(event, args):
        if event != 'open' or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = args[0], args[1], args[2]
        writing = (mode is not None and any(c in str(mode) for c in 'wax+')) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing:
            path = os.path.abspath(os.fsdecode(path))
            if path != own:
                log.write(path + '\n')

    return hook


if __name__ == '__main__':
    audit = sys.argv.pop(1)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, as `-m` from it
    sys.addaudithook(_hook(audit))
    from gsd import main

    main.run()

"""gsd's errors and warnings about the user's input: a file, a folder, a workdir or a setting.

Their message starts with what is wrong ('<file or setting>: <problem>'), so the command line
(`gsd.main`) prints it as one line, `gsd: <message>`, and exits with status 2 instead of showing a
traceback: the traceback would point into gsd, while the fix is in the user's file or config.
Subclasses keep their older bases (ValueError, ...), so existing `except ValueError` still works.
"""

from __future__ import annotations

import pathlib


class GsdError(Exception):
    """Bad input to gsd: the message is '<file or setting>: <problem>', one line (AnnotationError: one per file)."""


class SettingError(GsdError, ValueError):
    """A config setting (or command-line flag) gsd cannot use: '<setting>: <problem>'."""


class BadFileError(GsdError, ValueError):
    """A file or folder gsd cannot use (damaged, foreign): '<path>: <problem>'."""


class MissingInputError(GsdError, FileNotFoundError):
    """A file or folder a stage needs is not there: '<path>: <problem>[; the stage that makes it]'."""


class WorkdirBusy(GsdError):
    """Another gsd run holds the workdir's lock: '<workdir>: another gsd run (pid N) is using this workdir'."""


class GsdWarning(UserWarning):
    """Something the user should know about their input; the command line prints it as one line."""


def input_folder(value, setting: str) -> pathlib.Path:
    """The folder a setting names (e.g. segment.input), which must be given and exist."""
    if not value or not str(value).strip():
        raise SettingError(f'{setting}: give a folder of images (--config.{setting}=DIR)')
    folder = pathlib.Path(str(value)).expanduser()
    if not folder.is_dir():
        what = 'not a folder' if folder.exists() else 'no such folder'
        raise MissingInputError(f'{folder}: {what} ({setting})')
    return folder

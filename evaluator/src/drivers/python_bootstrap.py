"""Bootstrap for the jsheets Python driver.

The runtime starts the sandboxed interpreter as

    /usr/bin/python3.11 -I -c BOOTSTRAP

with the input JSON readable on fd 3 (the host writes it, then closes its
end) and the event pipe writable on fd 4.  BOOTSTRAP reads the JSON document
(one line) from fd 3 and exec()s the hot part of its "driver" member
(python_driver.py up to its first line starting with "#@cold"; the driver
compiles the cold sections after it when it needs them), compiled with the
filename "<jsheets-driver>", in a fresh globals dict:

    {"__name__": "__jsheets_driver__", "__builtins__": builtins,
     "__jsheets_input__": <the parsed document>}

The document is parsed with the scanner of _json, the C part of the json
module (importing json itself would also import re, enum, functools & co.,
milliseconds of start-up on every evaluation).  It parses exactly what
json.loads() parses (same C code, same defaults), except that anything after
the first JSON value is ignored instead of rejected.

It binds no names in __main__.  fd 3 is opened with closefd=False so that it
stays open until the driver closes it itself (the driver first dup()s fd 4,
then closes 3 and 4); otherwise dup(4) could land on the freed fd 3 number.
"""

import pathlib

# The one line itself lives beside this file so the Rust side embeds the same text.
BOOTSTRAP = (pathlib.Path(__file__).parent / "python_bootstrap.txt").read_text().strip()

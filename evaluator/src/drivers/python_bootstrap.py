"""Bootstrap for the jsheets Python driver.

The runtime starts the sandboxed interpreter as

    /usr/bin/python3.11 -I -c BOOTSTRAP

with the input JSON readable on fd 3 (the host writes it, then closes its
end) and the event pipe writable on fd 4.  BOOTSTRAP reads the whole JSON
document from fd 3 and exec()s its "driver" member (python_driver.py),
compiled with the filename "<jsheets-driver>", in a fresh globals dict:

    {"__name__": "__jsheets_driver__", "__builtins__": builtins,
     "__jsheets_input__": <the parsed document>}

It binds no names in __main__.  fd 3 is opened with closefd=False so that it
stays open until the driver closes it itself (the driver first dup()s fd 4,
then closes 3 and 4); otherwise dup(4) could land on the freed fd 3 number.
"""

import pathlib

# The one line itself lives beside this file so the Rust side embeds the same text.
BOOTSTRAP = (pathlib.Path(__file__).parent / "python_bootstrap.txt").read_text().strip()

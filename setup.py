"""Only for the optional C helper; everything else is in pyproject.toml.

geodns/_udpbatch.c batches UDP system calls (recvmmsg/sendmmsg, Linux).
It is optional: without a compiler the install goes on and geodns uses
plain recvfrom/sendto.  geodns/_mmdbtree.c walks a MaxMind database for the
compiled steering maps; without it there are no maps (decisions as before).
geodns/_zonetext.c reads the usual entries of a zone's records (POSIX: it
uses inet_pton); without it the loader reads them in Python.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("geodns._udpbatch", ["geodns/_udpbatch.c", "geodns/_plane.c"],
                                 depends=["geodns/_udpbatch.h"], optional=True,
                                 extra_compile_args=["-O2", "-Wall", "-Wextra"]))

# The compiled steering maps' database walk (geodns/steermap.py): portable C.
ext_modules.append(Extension("geodns._mmdbtree", ["geodns/_mmdbtree.c"], optional=True,
                             extra_compile_args=["-O2"] if sys.platform != "win32" else []))

# The usual entries of a zone's records read in C (geodns/zones/loader.py).
if sys.platform != "win32":
    ext_modules.append(Extension("geodns._zonetext", ["geodns/_zonetext.c"], optional=True,
                                 extra_compile_args=["-O2", "-Wall", "-Wextra"]))

setup(ext_modules=ext_modules)

"""Only for the optional C helper; everything else is in pyproject.toml.

geodns/_udpbatch.c batches UDP system calls (recvmmsg/sendmmsg, Linux).
It is optional: without a compiler the install goes on and geodns uses
plain recvfrom/sendto.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("geodns._udpbatch", ["geodns/_udpbatch.c"], optional=True,
                                 extra_compile_args=["-O2", "-Wall", "-Wextra"]))

setup(ext_modules=ext_modules)

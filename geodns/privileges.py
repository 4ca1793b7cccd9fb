"""Running as an unprivileged user: ``user: USER[:GROUP]`` (or ``geodns serve
--user``).

Theory of operation.  A DNS server needs one privilege, binding ports below
1024, and it needs it for as long as it runs: a worker started again, the
successor of ``geodns restart`` (a new ``python -m geodns serve``) and a
listen address added on a restart all bind port 53 later.  So a node started
as root becomes the user first thing, before it reads a zone or the GeoIP
database, and keeps exactly CAP_NET_BIND_SERVICE:

1. ``prctl(PR_SET_KEEPCAPS, 1)``: the permitted capabilities survive the
   change of user (they would all be cleared otherwise);
2. ``initgroups``, ``setresgid``, ``setresuid``: the user's groups, then its
   group, then the user itself (real, effective and saved ids, so there is
   no way back to root);
3. ``capset``: permitted = effective = inheritable = {CAP_NET_BIND_SERVICE},
   every other capability gone;
4. ``prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE)``: an ambient
   capability is kept across ``execve`` of an ordinary program, which is
   what the restart's successor is (without it, the exec'd process would
   run as the user with no capability and could not bind port 53);
5. ``PR_SET_KEEPCAPS`` cleared, and ``PR_SET_NO_NEW_PRIVS``: nothing this
   process or its successors exec can gain a privilege (setuid programs,
   file capabilities).

Then it checks what it got (``/proc/self/status``, and that setting uid 0
again fails).  Python has no ``capset``: glibc's (and musl's) is called
through :mod:`ctypes`, which is imported only here, only when dropping.

A node started as that user already (systemd's ``User=`` with
``AmbientCapabilities=CAP_NET_BIND_SERVICE``, or the successor of a restart)
changes nothing; one started as another user refuses to start.  The parsing
and the decisions are pure functions, tested without root.
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geodns.errors import GeodnsError

CAP_NET_BIND_SERVICE = 10
KEPT = 1 << CAP_NET_BIND_SERVICE  # the one capability a node keeps

# <linux/prctl.h> and <linux/capability.h>
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class UserError(GeodnsError):
    """The user asked for cannot be used as this process was started (an
    unknown user, or a process running as someone else): a configuration
    problem, exit status 2."""

    exit_status = 2


class PrivilegeError(GeodnsError):
    """Becoming the user failed (the kernel refused a step): exit status 1."""

    exit_status = 1


@dataclass(frozen=True, slots=True)
class RunAs:
    """Who a node runs as: a user of the passwd database and a group."""

    user: str
    uid: int
    group: str
    gid: int
    home: str

    def __str__(self) -> str:
        return f"{self.user} (uid {self.uid}), group {self.group} (gid {self.gid})"


def parse_spec(text: str) -> tuple[str, str | None]:
    """``USER`` or ``USER:GROUP`` (names or numeric ids), split.  ValueError
    says what is wrong."""
    user, sep, group = text.partition(":")
    if not user.strip() or (sep and not group.strip()) or ":" in group:
        raise ValueError(f"{text!r}: write USER or USER:GROUP")
    if user != user.strip() or group != group.strip():
        raise ValueError(f"{text!r}: no spaces around the user or group name")
    return user, group if sep else None


Lookup = Callable[[Any], Any]


def resolve(text: str, getpwnam: Lookup = pwd.getpwnam, getpwuid: Lookup = pwd.getpwuid,
            getgrnam: Lookup = grp.getgrnam, getgrgid: Lookup = grp.getgrgid) -> RunAs:
    """The user (and group: the user's own unless given) that ``text``
    names, from the passwd and group databases.  ValueError says why not:
    unknown, or root (which would keep every privilege)."""
    user, group = parse_spec(text)
    pw = _find(user, getpwnam, getpwuid)
    if pw is None:
        raise ValueError(f"unknown user {user!r} (not in the passwd database; create it, "
                         f"e.g. useradd --system --no-create-home {user})")
    if pw.pw_uid == 0:
        raise ValueError(f"{user!r} is root: geodns would keep every privilege; name an "
                         "unprivileged user (or remove the setting)")
    if group is None:
        gr = _find(str(pw.pw_gid), None, getgrgid)
        return RunAs(pw.pw_name, pw.pw_uid, gr.gr_name if gr is not None else str(pw.pw_gid),
                     pw.pw_gid, pw.pw_dir)
    gr = _find(group, getgrnam, getgrgid)
    if gr is None:
        raise ValueError(f"unknown group {group!r} (not in the group database)")
    return RunAs(pw.pw_name, pw.pw_uid, gr.gr_name, gr.gr_gid, pw.pw_dir)


def _find(name: str, by_name: Lookup | None, by_id: Lookup) -> Any:
    """A database entry by name, else (all digits) by id; None if neither."""
    if by_name is not None:
        try:
            return by_name(name)
        except KeyError:
            pass
    if name.isascii() and name.isdigit():
        try:
            return by_id(int(name))
        except (KeyError, OverflowError):
            pass
    return None


def must_drop(run_as: RunAs, uid: int, gid: int) -> bool:
    """Started as ``uid``/``gid``: True when the process must become
    ``run_as`` (it is root), False when it is that user already.
    :class:`UserError` when it is someone else: it cannot change user."""
    if uid == 0:
        return True
    if uid == run_as.uid and gid == run_as.gid:
        return False
    raise UserError(f"user {run_as.user}:{run_as.group} is configured, but this process runs "
                    f"as {_name(uid, gid)} and cannot change user: start geodns as root (it "
                    "then becomes that user) or as that user")


def _name(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "?"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = "?"
    return f"{user} (uid {uid}), group {group} (gid {gid})"


def capability_sets(status: str) -> dict[str, int]:
    """The capability masks (``CapInh``, ``CapPrm``, ``CapEff``, ``CapBnd``,
    ``CapAmb``) in the text of ``/proc/PID/status``."""
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
    return out


def ids(status: str) -> dict[str, tuple[int, ...]]:
    """``Uid``, ``Gid`` (real, effective, saved, filesystem) and ``Groups``
    in the text of ``/proc/PID/status``."""
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = tuple(int(v) for v in value.split())
    return out


def cap_words(mask: int) -> tuple[int, int]:
    """A 64-bit capability mask as the two 32-bit words of capset's
    version 3 data (the low capabilities first)."""
    if not 0 <= mask < 1 << 64:
        raise ValueError(f"not a capability mask: {mask:#x}")
    return mask & 0xFFFFFFFF, mask >> 32


def become(run_as: RunAs) -> bool:
    """Run as ``run_as`` from now on, keeping CAP_NET_BIND_SERVICE only (see
    the module's docstring).  True when this process changed user, False
    when it was that user already.  Raises :class:`UserError` (another user)
    or :class:`PrivilegeError` (the kernel refused)."""
    if not must_drop(run_as, os.geteuid(), os.getegid()):
        return False
    if not sys.platform.startswith("linux"):
        raise PrivilegeError("user: changing user is implemented for Linux only; start "
                             "geodns as that user instead")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # set*id and capset would not reach the others alike
        raise PrivilegeError(f"geodns must change user before it starts threads, and {threads} "
                             "run already (a bug)")
    step = "keeping capabilities across the change of user"
    try:
        _prctl(PR_SET_KEEPCAPS, 1)
        step = f"joining the groups of {run_as.user}"
        os.initgroups(run_as.user, run_as.gid)
        step = f"becoming group {run_as.group}"
        os.setresgid(run_as.gid, run_as.gid, run_as.gid)
        step = f"becoming user {run_as.user}"
        os.setresuid(run_as.uid, run_as.uid, run_as.uid)
        step = "keeping CAP_NET_BIND_SERVICE and dropping every other capability"
        _capset(KEPT, KEPT, KEPT)
        step = "keeping CAP_NET_BIND_SERVICE for restarted nodes (an ambient capability)"
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE)
        step = "clearing keep-capabilities"
        _prctl(PR_SET_KEEPCAPS, 0)
        step = "setting no_new_privs"
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise PrivilegeError(f"cannot run as {run_as}: {step} failed: {exc}") from None
    _verify(run_as)
    os.environ.update(HOME=run_as.home, USER=run_as.user, LOGNAME=run_as.user)
    return True


def _verify(run_as: RunAs) -> None:
    """Check what the kernel says this process is now."""
    with open("/proc/self/status", encoding="ascii") as f:
        status = f.read()
    got, caps = ids(status), capability_sets(status)
    wrong = []
    if set(got["Uid"]) != {run_as.uid} or set(got["Gid"]) != {run_as.gid}:
        wrong.append(f"uids {got['Uid']}, gids {got['Gid']}")
    for key in ("CapPrm", "CapEff", "CapAmb"):
        if caps.get(key) != KEPT:
            wrong.append(f"{key} {caps.get(key, 0):#x}")
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        pass
    else:
        wrong.append("it could become root again")
    if wrong:
        raise PrivilegeError(f"after becoming {run_as}: expected only CAP_NET_BIND_SERVICE "
                             f"({KEPT:#x}) as that user, found {'; '.join(wrong)}")


def unusable(run_as: RunAs, read: Iterable[tuple[str, Path]],
             write: Iterable[tuple[str, Path]],
             run: Iterable[tuple[str, Path]]) -> list[str]:
    """What this process, running as ``run_as`` now, cannot use among the
    files it needs later: files and directories it reads again (``read``),
    files it creates or replaces (``write``: in their directory, or the
    closest existing parent), programs it runs (``run``).  Each entry is
    (what the setting or the file is, its path)."""
    out = []
    for what, path in read:
        mode = os.R_OK | os.X_OK if os.path.isdir(path) else os.R_OK
        if not os.access(path, mode):
            out.append(f"{what} {path}: user {run_as.user} cannot read it ({_why(path)})")
    for what, path in write:
        if _exists(path) and not os.access(path, os.R_OK | os.W_OK):
            out.append(f"{what} {path}: user {run_as.user} cannot read and replace it "
                       f"({_why(path)})")
        place = path.parent
        while _exists(place) is False and place != place.parent:
            place = place.parent
        if not os.access(place, os.W_OK | os.X_OK):
            out.append(f"{what} {path}: user {run_as.user} cannot create files in {place} "
                       f"({_why(place)})")
    for what, path in run:
        if not os.access(path, os.X_OK):
            out.append(f"{what} {path}: user {run_as.user} cannot run it ({_why(path)})")
    return out


def _exists(path: Path) -> bool | None:
    """Whether ``path`` exists; None when this user cannot tell (a parent
    it may not search)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return None
    return True


def _why(path: Path) -> str:
    """What stops the way: a parent that may not be searched, else the
    path's own owner and mode."""
    for place in reversed(path.parents):
        if not os.access(place, os.X_OK):
            return f"{place} is {_mode(place)}"
    return _mode(path)


def _mode(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group} mode {st.st_mode & 0o7777:04o}"


# -- the system calls Python does not have --------------------------------------------
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg2: int, arg3: int = 0) -> None:
    import ctypes

    if _libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                     ctypes.c_ulong(0)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}): {os.strerror(errno)}")


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2), version 3: this thread's three capability sets."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(LINUX_CAPABILITY_VERSION_3, 0)
    words = [cap_words(m) for m in (effective, permitted, inheritable)]
    data = (Data * 2)(*(Data(words[0][i], words[1][i], words[2][i]) for i in range(2)))
    if _libc().capset(ctypes.byref(header), data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"capset: {os.strerror(errno)}")


__all__ = ["CAP_NET_BIND_SERVICE", "KEPT", "PrivilegeError", "RunAs", "UserError", "become",
           "cap_words", "capability_sets", "ids", "must_drop", "parse_spec", "resolve",
           "unusable"]

"""A seccomp filter for the sandbox: no new processes or threads, keyrings, namespaces, mounts or shared memory.

Why: resource limits (RLIMIT_CPU, RLIMIT_AS) are per process, so a submission that may fork can
multiply them; the kernel's keyrings are shared with the host user and outlive the sandbox (a channel
between students); a nested user namespace could mount a tmpfs without a size limit, and a memfd is
memory outside the address-space limit, and so are System V shared memory segments; a new session
would escape the grader's kill of the process group; io_uring's kernel workers are threads the filter
could not otherwise count; and the sandbox's user owns, outside, what the grader's user owns (root:
the host's /dev/null it is given), so changing modes, owners or extended attributes is refused too.

The filter is classic BPF, written out here (no libseccomp needed) for x86-64 and AArch64, the
machines the course runs on; bubblewrap loads it (``--seccomp FD``) just before it starts the runner.
A system call from another ABI (32-bit x86, x32) fails with EPERM. On other architectures
:func:`filter_program` returns None and the grader says so.
"""
from __future__ import annotations

import errno
import platform
import struct

# classic BPF opcodes (linux/filter.h, linux/bpf_common.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000

#: per machine: audit arch, and the numbers of the system calls the filter refuses
_TABLES = {
    "x86_64": dict(arch=0xC000003E, x32=True, clone=56, clone3=435,
                   deny=dict(fork=57, vfork=58, add_key=248, request_key=249, keyctl=250, unshare=272, setns=308,
                             mount=165, umount2=166, pivot_root=155, chroot=161, memfd_create=319, ptrace=101,
                             process_vm_readv=310, process_vm_writev=311, bpf=321, userfaultfd=323, perf_event_open=298,
                             fsopen=430, fsmount=432, move_mount=429, open_tree=428, setsid=112, setpgid=109,
                             shmget=29, shmat=30, msgget=68, semget=64, io_uring_setup=425, io_uring_enter=426,
                             io_uring_register=427, chmod=90, fchmod=91, chown=92, fchown=93, lchown=94, fchmodat=268,
                             fchownat=260, fchmodat2=452, setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197,
                             lremovexattr=198, fremovexattr=199)),
    "aarch64": dict(arch=0xC00000B7, x32=False, clone=220, clone3=435,
                    deny=dict(add_key=217, request_key=218, keyctl=219, unshare=97, setns=268, mount=40, umount2=39,
                              pivot_root=41, chroot=51, memfd_create=279, ptrace=117, process_vm_readv=270,
                              process_vm_writev=271, bpf=280, userfaultfd=282, perf_event_open=241,
                              fsopen=430, fsmount=432, move_mount=429, open_tree=428, setsid=157, setpgid=154,
                              shmget=194, shmat=196, msgget=186, semget=190, io_uring_setup=425, io_uring_enter=426,
                              io_uring_register=427, fchmod=52, fchmodat=53, fchownat=54, fchown=55, fchmodat2=452,
                              setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14, lremovexattr=15, fremovexattr=16)),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def filter_program(machine: str | None = None, *, threads: bool = False) -> bytes | None:
    """The filter as the bytes bubblewrap reads, or None where this machine has no table.

    ``threads=False`` (the grader's choice) refuses threads too: the course's answers need none (torch
    and NumPy run on one thread there), and a submission's threads are not otherwise limited when the
    grader runs as root (RLIMIT_NPROC does not apply to root), so a thread bomb could use up the host's
    process IDs or starve other submissions of CPU.
    """
    table = _TABLES.get(machine or platform.machine())
    if table is None:
        return None
    deny_numbers = sorted(table["deny"].values())
    # Layout: [arch check][x32 check][one jeq per denied call][clone3][clone] ALLOW, EPERM, ENOSYS, clone-flags check
    prog: list[tuple] = [("ld", 4), ("jeq_arch", table["arch"]), ("ld", 0)]
    if table["x32"]:
        prog.append(("jge_eperm", _X32_BIT))
    prog += [("jeq_eperm", n) for n in deny_numbers]
    prog += [("jeq_enosys", table["clone3"]), ("jeq_clone", table["clone"]), ("allow",), ("eperm",), ("enosys",),
             ("clone_flags",), ("jset_thread",), ("allow",), ("eperm",)]
    where = {name: i for i, (name, *_) in reversed(list(enumerate(prog)))}  # first index of each kind
    eperm, enosys, flags = where["eperm"], where["enosys"], where["clone_flags"]
    out = []
    for i, (name, *arg) in enumerate(prog):
        def skip(target: int, here: int = i) -> int:  # BPF jumps count from the next instruction
            return target - here - 1

        if name == "ld":
            out.append(_insn(_LD_W_ABS, arg[0]))
        elif name == "jeq_arch":
            out.append(_insn(_JEQ, arg[0], 0, skip(eperm)))
        elif name == "jge_eperm":
            out.append(_insn(_JGE, arg[0], skip(eperm), 0))
        elif name == "jeq_eperm":
            out.append(_insn(_JEQ, arg[0], skip(eperm), 0))
        elif name == "jeq_enosys":  # clone3 passes its flags in memory the filter cannot read: glibc falls back to clone
            out.append(_insn(_JEQ, arg[0], skip(enosys), 0))
        elif name == "jeq_clone":
            out.append(_insn(_JEQ, arg[0], skip(flags), 0))
        elif name == "allow":
            out.append(_insn(_RET, _ALLOW))
        elif name == "eperm":
            out.append(_insn(_RET, _ERRNO | errno.EPERM))
        elif name == "enosys":
            out.append(_insn(_RET, _ERRNO | errno.ENOSYS))
        elif name == "clone_flags":
            out.append(_insn(_LD_W_ABS, 16))  # args[0], low 32 bits (little-endian)
        elif name == "jset_thread":
            # a thread (if allowed): the ALLOW right after; else the EPERM after it
            out.append(_insn(_JSET, _CLONE_THREAD if threads else 0, 0, 1))
    return b"".join(out)

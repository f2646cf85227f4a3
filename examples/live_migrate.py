#!/usr/bin/env python3
"""Live-migrate a QEMU VM with a VFIO device, without hardware, and verify it.

Starts two QEMUs (7.2: the legacy v1 migration region, `x-enable-migration=on`), each under
`type1 run` with the built-in DMA test device; the source's device writes guest RAM all
through pre-copy (device option `writer=`, started once bus mastering is on, which this script
sets as a guest driver would). Migrates over a unix socket, compares all of guest RAM of both
paused sides page by page (the legacy 0xA0000-0xFFFFF window left out), resumes the
destination to check that its writer continues the source's sequence, and prints QEMU's
`query-migrate` figures and type1's DIRTY_PAGES requests.

    python3 examples/live_migrate.py [--mode precise|kernel-exact] [--qemu qemu-system-x86_64]
                                     [--type1 target/release/type1] [--accel kvm|tcg]

Exit status 0 when the RAM of both sides is identical and the writer continued; 1 otherwise.
tests/qemu_migrate.rs runs the same checks in CI.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BDF = "0000:00:1f.0"
RAM = 256 << 20
PAGE = 4096
LEGACY = range(0xA0000, 0x100000)
WINDOW, WINDOW_SIZE, RATE, SEED = 0x1000000, 0x400000, 2000, 0x7E570001


class Qmp:
    def __init__(self, path, deadline=30):
        end = time.time() + deadline
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > end:
                    raise SystemExit(f"no QMP socket at {path}")
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.f.readline()
        self("qmp_capabilities")

    def __call__(self, cmd, **args):
        msg = {"execute": cmd, "arguments": args} if args else {"execute": cmd}
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                continue
            if "error" in r:
                raise SystemExit(f"QMP {cmd}: {r['error']}")
            return r["return"]

    def hmp(self, line):
        return self("human-monitor-command", **{"command-line": line})

    def dut(self):
        for bus in self("query-pci"):
            for d in bus["devices"]:
                if d.get("qdev_id") == "dut":
                    return d
        raise SystemExit("no dut in query-pci")

    def bar0(self, off):
        bar0 = next(r["address"] for r in self.dut()["regions"] if r["bar"] == 0)
        return int(self.hmp(f"xp /1gx {bar0 + off:#x}").split(": ")[1], 16)


def xorshift(x):
    x = x or 0x9E3779B97F4A7C15
    x ^= (x << 13) & (2**64 - 1)
    x ^= x >> 7
    x ^= (x << 17) & (2**64 - 1)
    return x


def expected_window(n):
    """The window after the writer's writes 1..=n: per page, the last write's number (0: none)."""
    pages = WINDOW_SIZE // PAGE
    last, st = [0] * pages, SEED
    for seq in range(1, n + 1):
        st = xorshift(st)
        last[st % pages] = seq
    return last


def check_window(data, n):
    bad = []
    for i, seq in enumerate(expected_window(n)):
        page = data[i * PAGE:(i + 1) * PAGE]
        want = (seq.to_bytes(8, "little") + SEED.to_bytes(8, "little") if seq else b"\0" * 16)
        if page[:16] != want or page[16:].strip(b"\0"):
            bad.append(WINDOW + i * PAGE)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", default="precise", choices=["precise", "kernel-exact"])
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--type1", default="target/release/type1")
    ap.add_argument("--accel", default="kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg")
    a = ap.parse_args()
    run = tempfile.mkdtemp(prefix="type1-live-migrate-")
    procs = []
    try:
        for side in ("src", "dst"):
            dev = f"{BDF}@5,migration=v1"
            if side == "src":
                dev += f",writer={WINDOW:#x}+{WINDOW_SIZE:#x},writer-rate={RATE},writer-seed={SEED:#x}"
            cmd = [a.type1, "run", "--dirty-mode", a.mode, "--group", "5:iommu", "--device", dev,
                   "--trace", f"{run}/{side}.jsonl", "--", a.qemu, "-machine", f"q35,accel={a.accel}",
                   "-m", "256M", "-nodefaults", "-nographic", "-serial", "none", "-monitor", "none",
                   "-device", f"vfio-pci,host={BDF},id=dut,x-enable-migration=on",
                   "-qmp", f"unix:{run}/{side}.sock,server=on,wait=off"]
            if side == "dst":
                cmd += ["-S", "-incoming", f"unix:{run}/mig.sock"]
            print(" ".join(cmd))
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                          stderr=open(f"{run}/{side}.stderr", "w")))
        src, dst = Qmp(f"{run}/src.sock"), Qmp(f"{run}/dst.sock")

        # The firmware assigns the BARs; then bus master on (config cycles via 0xcf8/0xcfc).
        end = time.time() + 90
        while not all(r["address"] not in (0, 2**64 - 1) and r["address"] % r["size"] == 0
                      for r in src.dut()["regions"]):
            if time.time() > end:
                raise SystemExit("the firmware did not assign the BARs")
            time.sleep(0.1)
        time.sleep(0.5)  # SeaBIOS finishes its PCI setup
        d = src.dut()
        src.hmp(f"o /w 0xcf8 {0x80000004 | d['bus'] << 16 | d['slot'] << 11 | d['function'] << 8:#x}")
        src.hmp(f"o /h 0xcfc {int(src.hmp('i /h 0xcfc').split('= ')[1], 16) | 4:#x}")
        end = time.time() + 20
        while src.bar0(0xC0) == 0:
            if time.time() > end:
                raise SystemExit("the device's writer did not start")
            time.sleep(0.05)
        before = src.bar0(0xC0)

        src("migrate-set-parameters", **{"max-bandwidth": 4 << 30,
                                         "downtime-limit": 30000 if a.mode == "kernel-exact" else 300})
        t0 = time.time()
        src("migrate", uri=f"unix:{run}/mig.sock")
        while (m := src("query-migrate"))["status"] not in ("completed", "failed", "cancelled"):
            if time.time() - t0 > 60:
                raise SystemExit("the migration did not complete in 60 s")
            time.sleep(0.05)
        if m["status"] != "completed":
            raise SystemExit(f"migration {m['status']}: {m}")
        while dst("query-status")["status"] == "inmigrate":
            time.sleep(0.05)
        pages = src.bar0(0xC0)

        for side, q in (("src", src), ("dst", dst)):
            q("pmemsave", val=0, size=RAM, filename=f"{run}/{side}.ram")
        with open(f"{run}/src.ram", "rb") as fa, open(f"{run}/dst.ram", "rb") as fb:
            ra, rb = fa.read(), fb.read()
        diff = [p for p in range(0, RAM, PAGE)
                if p not in LEGACY and ra[p:p + PAGE] != rb[p:p + PAGE]]
        bad_src = check_window(rb[WINDOW:WINDOW + WINDOW_SIZE], pages)

        dst("cont")
        while dst.bar0(0xC0) < pages + 64:
            time.sleep(0.02)
        dst("stop")
        later = dst.bar0(0xC0)
        dst("pmemsave", val=WINDOW, size=WINDOW_SIZE, filename=f"{run}/dst.window")
        with open(f"{run}/dst.window", "rb") as f:
            bad_dst = check_window(f.read(), later)

        src("cont")  # QEMU issues the postponed DIRTY_PAGES STOP once the source runs again
        time.sleep(0.5)
        flags = {}
        for line in open(f"{run}/src.jsonl"):
            r = json.loads(line)
            if r.get("request") == "VFIO_IOMMU_DIRTY_PAGES":
                name = {1: "START", 2: "STOP", 4: "GET_BITMAP"}.get(r["args"].get("flags"), "?")
                flags[name] = flags.get(name, 0) + 1
        src("quit")
        dst("quit")

        ram = m["ram"]
        print(f"\n{a.mode}: total-time {m['total-time']} ms, downtime {m['downtime']} ms, "
              f"setup-time {m['setup-time']} ms, transferred {ram['transferred']} bytes, "
              f"dirty-sync-count {ram['dirty-sync-count']}, pages sent {ram['normal']} normal / "
              f"{ram['duplicate']} zero")
        print(f"type1 DIRTY_PAGES requests: {flags}")
        print(f"device: {pages - before} pages written during the migration, {pages} in all; "
              f"the destination went on to {later}")
        ok = True
        if diff:
            ok = False
            print(f"FAIL: {len(diff)} guest pages differ: " + " ".join(f"{p:#x}" for p in diff[:32]))
        if bad_src:
            ok = False
            print(f"FAIL: the writer's window does not hold writes 1..={pages}: {bad_src[:8]}")
        if bad_dst:
            ok = False
            print(f"FAIL: the destination's writer did not continue the sequence: {bad_dst[:8]}")
        if ok:
            print("OK: guest RAM identical page by page; the destination's writer continued "
                  "the source's sequence")
        return 0 if ok else 1
    finally:
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

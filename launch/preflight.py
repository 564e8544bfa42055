"""`medtrain launch --check`: reach every host through the chosen launcher, compare versions, all-reduce once.

Peers' users meet a wrong torch on one node, or a firewalled port, as a 30-minute collective timeout; this
shows it in a table within the timeout given.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from medtrain.core.gpu_build import DeviceFacts
from medtrain.core.provenance import versions
from medtrain.launch.host_checks import ENV, encode
from medtrain.launch.launcher import LaunchSpec, build_command, launch_environment, write_env_file
from medtrain.launch.preflight_rank import MARKER
from medtrain.launch.slurm import SlurmJob, SlurmOptions

COMPARED = ("python", "torch", "deepspeed", "medtrain", "commit")


@dataclass
class HostReport:
    host: str
    expected_ranks: int
    ranks: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Preflight:
    hosts: list[HostReport]
    allreduce_ok: bool
    returncode: int
    reference: dict[str, str]

    def problem_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for h in self.hosts:
            for p in h.problems:
                groups.setdefault(_generic(p, h.host), []).append(h.host)
        return groups

    @property
    def ok(self) -> bool:
        return self.allreduce_ok and self.returncode == 0 and not any(h.problems for h in self.hosts)

    def render(self) -> str:
        """The table, one row per host, then each distinct problem once, whole, with the hosts it hit: 120
        unreachable ranks are one line, not 120 copies of it cut to the column's width."""
        groups = self.problem_groups()
        number = {text: i for i, text in enumerate(groups, start=1)}
        head = (f"{'host':<24} {'ranks':>5}  " + "  ".join(f"{c:<12}" for c in COMPARED)
                + f"  {'GPUs and torch build':<44}  status")
        lines = [head]
        for h in self.hosts:
            first = h.ranks[0] if h.ranks else {}
            cells = "  ".join(f"{str(first.get(c, '-'))[:12]:<12}" for c in COMPARED)
            status = "ok" if not h.problems else " ".join(f"[{number[_generic(p, h.host)]}]" for p in h.problems)
            device = DeviceFacts.from_dict(first["device"]).describe() if "device" in first else "-"
            lines.append(f"{h.host:<24} {len(h.ranks):>2}/{h.expected_ranks:<2}  {cells}  {device:<44}  {status}")
        for text, hosts in groups.items():
            shown = ", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")
            lines.append(f"[{number[text]}] {text} — {len(hosts)} host(s): {shown}")
        ar = "ok" if self.allreduce_ok else "FAILED"
        lines.append(f"all-reduce over all ranks: {ar}; launcher exit code {self.returncode}")
        lines.append("PREFLIGHT OK" if self.ok else "PREFLIGHT FAILED")
        return "\n".join(lines)


def _generic(problem: str, host: str) -> str:
    """A problem with its host's name taken out, so the same fault on many hosts reads as one."""
    return problem.replace(host, "<host>")


def parse_reports(output: str) -> tuple[list[dict], dict | None]:
    starts, done = [], None
    for line in output.splitlines():
        i = line.find(MARKER)
        if i < 0:
            continue
        try:
            payload = json.loads(line[i + len(MARKER):])
        except json.JSONDecodeError:
            continue
        if payload.get("event") == "start":
            starts.append(payload)
        elif payload.get("event") == "done":
            done = payload
    return starts, done


def summarize(spec: LaunchSpec, output: str, returncode: int, reference: dict[str, str]) -> Preflight:
    """The per-host table from what the ranks printed; a host that started no rank is explained by the
    launcher's and ssh's words (explain_silent_hosts)."""
    starts, done = parse_reports(output)
    reports = [HostReport(h, s) for h, s in spec.pool.items()]
    for r in starts:
        node = r.get("node_rank", 0)
        if 0 <= node < len(reports):
            reports[node].ranks.append(r)
    world = spec.world_size
    explain_silent_hosts(reports, spec, output)
    for rep in reports:
        if not rep.ranks:
            continue
        for r in rep.ranks:
            rep.problems += [p for p in r.get("host_problems", []) if p not in rep.problems]
        if len(rep.ranks) != rep.expected_ranks:
            rep.problems.append(f"{len(rep.ranks)} of {rep.expected_ranks} ranks started")
        for key in COMPARED:
            seen = {str(r.get(key)) for r in rep.ranks}
            if seen != {reference[key]}:
                rep.problems.append(f"{key} {'/'.join(sorted(seen))} != {reference[key]} here")
    allreduce_ok = bool(done) and done.get("world_size") == world and done.get("allreduce") == world * (world - 1) / 2
    if done is None and all(not rep.problems for rep in reports):
        reports[0].problems.append("ranks started but the all-reduce did not complete")
    return Preflight(reports, allreduce_ok, returncode, reference)


_FAILURE = re.compile(r"ssh|refused|denied|timed out|no route|resolve|not known|not reachable|exit(ed)? (with )?"
                      r"(code|status)|not found|error|fail", re.IGNORECASE)


def host_error(output: str, host: str) -> str:
    """Why a host started nothing, in the launcher's words: pdsh prefixes a host's lines with 'host: ', DeepSpeed
    says 'host=H was not reachable', mpirun and ssh name the host inside the line (the last two such lines).
    Else the launcher's last error, which stopped it before it reached this host."""
    named = re.compile(rf"(^|[\s@:=\[]){re.escape(host)}([\s:\],]|$)")
    found: list[str] = []
    for line in output.splitlines():
        line = line.strip()
        if MARKER not in line and named.search(line) and _FAILURE.search(line) and line[:200] not in found:
            found.append(line[:200])
    if found:
        return "; ".join(found[-2:])
    errors = [line.strip() for line in output.splitlines() if re.search(r"Error\b|error:", line)]
    return f"the launcher stopped first: {errors[-1][:200]}" if errors else "unreachable, or the launcher failed there"


def ssh_error(host: str, env: dict[str, str]) -> str:
    """ssh's own complaint about a host (DeepSpeed's reachability probe throws it away), '' when ssh works."""
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", host, "true"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ssh {host}: {e}"
    if proc.returncode == 0:
        return ""
    said = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return said[-1][:200] if said else f"ssh {host} exited with code {proc.returncode}"


def explain_silent_hosts(reports: list[HostReport], spec: LaunchSpec, output: str) -> None:
    """Hosts that started no rank get the launcher's words for them, and, over ssh launchers, ssh's own."""

    silent = [h for h in reports if not h.ranks]
    ssh: dict[str, str] = {}
    if silent and spec.launcher in ("pdsh", "openmpi"):
        env = launch_environment(spec)
        with ThreadPoolExecutor(max_workers=min(16, len(silent))) as pool:
            ssh = dict(zip((h.host for h in silent), pool.map(lambda h: ssh_error(h.host, env), silent),
                           strict=True))
    for h in silent:
        reason = "; ".join(x for x in (ssh.get(h.host), host_error(output, h.host)) if x)
        h.problems.append(f"no rank started ({reason})")


def run_preflight(spec: LaunchSpec, timeout: float = 120.0, slurm=None, expect: dict | None = None) -> Preflight:
    """`expect`: what every host must see (launch.host_checks.expectations); each host's first rank checks it."""

    spec.entry = ["--module", "medtrain.launch.preflight_rank"]
    if expect is not None:
        spec.env[ENV] = encode(expect)
    spec.env.setdefault("MEDTRAIN_PREFLIGHT_TIMEOUT", str(int(max(10, timeout - 10))))
    write_env_file(spec)
    if spec.launcher == "slurm":
        return _slurm_preflight(spec, timeout, slurm)
    cmd = build_command(spec)
    proc = subprocess.Popen(cmd, env=launch_environment(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every local rank it started
        output, _ = proc.communicate()
        code = 124
    return summarize(spec, output, code, versions())


def _slurm_preflight(spec: LaunchSpec, timeout: float, slurm) -> Preflight:
    """The same ranks as a short batch job of the run's allocation shape; its log is what the ranks said. A job
    still pending or running at the timeout is cancelled (exit code 124)."""


    job = SlurmJob(spec, slurm or SlurmOptions(), "medtrain-preflight", launch_environment(spec), echo=False)
    deadline = time.time() + timeout
    while (code := job.poll()) is None and time.time() < deadline:
        time.sleep(0.5)
    if code is None:
        job.end([])
        code = 124
    output = job.log.read_text(errors="replace") if job.log.is_file() else ""
    return summarize(spec, output, code, versions())

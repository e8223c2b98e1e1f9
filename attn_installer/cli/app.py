"""The App: everything a command talks to, built once from the environment and put in click's
context object. Tests pass their own (a fake probe, a recording runner) instead of patching modules.

It is the :class:`attn_installer.install.run.Host` of install runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import click

from attn_installer.paths import Paths, matrix_dir

if TYPE_CHECKING:
    from attn_installer.facts import Facts
    from attn_installer.matrix import Matrix
    from attn_installer.plan.model import Plan
    from attn_installer.request import MeasuredSpeed, Training
    from attn_installer.runner import Runner

__all__ = ["App"]


class App:
    def __init__(self, env: Mapping[str, str], *, runner_factory: Optional[Callable[..., Runner]] = None,
                 probe: Optional[Callable[..., Facts]] = None, interactive: Optional[bool] = None) -> None:
        self.env = dict(env)
        self.paths = Paths.from_env(self.env)
        self.debug = self.env.get("ATTN_INSTALL_DEBUG") == "1"
        self._runner_factory = runner_factory
        self._probe = probe
        self._interactive = interactive
        self.torch_index: Optional[str] = self.env.get("ATTN_INSTALL_PYTORCH_INDEX") or None
        """A mirror of download.pytorch.org/whl (--pytorch-index)."""
        self._probed: dict[tuple[Optional[str], bool], Facts] = {}
        self.merge_options: dict[str, Any] = {}
        """How `--auto --merge` writes (the training config read, --force): set by the CLI."""

    def torch_index_template(self) -> Optional[str]:
        """The mirror (--pytorch-index, else ATTN_INSTALL_PYTORCH_INDEX) as a URL template with
        {flavour}, or None for the matrix's own index."""
        from attn_installer.checks import Bad, url_template  # noqa: PLC0415
        from attn_installer.errors import UsageError  # noqa: PLC0415

        ctx = click.get_current_context(silent=True)
        url = (ctx.meta.get("attn_install.pytorch_index") if ctx is not None else None) or self.torch_index
        if not url:
            return None
        url = url if "{flavour}" in url else url.rstrip("/") + "/{flavour}"
        try:
            return str(url_template(("flavour",))(url))
        except Bad as e:
            raise UsageError(f"--pytorch-index / ATTN_INSTALL_PYTORCH_INDEX: {e}") from None

    # ------------------------------------------------------------------ services

    def matrix(self) -> Matrix:
        from attn_installer.matrix import load_matrix  # noqa: PLC0415 - lazy: keep --help fast

        return load_matrix(matrix_dir(self.env))

    def runner(self, log_path: Optional[Path] = None) -> Runner:
        if self._runner_factory is not None:
            return self._runner_factory(log_path)
        from attn_installer.runner import SubprocessRunner  # noqa: PLC0415

        return SubprocessRunner(log_path)

    def probe(self, python: Optional[str], want_arch_list: bool = False) -> Facts:
        """The facts of this machine, probed once per interpreter in a command (the CLI reads the
        training's checks from them before an install run asks again)."""
        key = (python, want_arch_list)
        if key not in self._probed:
            self._probed[key] = self._probe_now(python, want_arch_list)
        return self._probed[key]

    def forget_probe(self) -> None:
        """After an install changed the environment: the next probe reads it again."""
        self._probed.clear()

    def _probe_now(self, python: Optional[str], want_arch_list: bool) -> Facts:
        if self._probe is not None:
            return self._probe(python, want_arch_list)
        from attn_installer.probe import probe_system  # noqa: PLC0415

        matrix = self.matrix()
        return probe_system(self.env, self.runner(), python_exe=python, want_arch_list=want_arch_list,
                            distributions=matrix.recorded_distributions, capabilities=matrix.gpu_capabilities,
                            build_flag_files={b.distribution: b.build_flags_file for b in matrix.backends
                                              if b.build_flags_file})

    def facts(self, facts_file: Optional[Path], python: Optional[str]) -> Facts:
        if facts_file is not None:
            from attn_installer.facts import load_facts  # noqa: PLC0415

            return load_facts(facts_file)
        return self.probe(python)

    # ------------------------------------------------------------------ terminal

    def out(self, text: str = "") -> None:
        click.echo(text)

    def say(self, text: str) -> None:
        """Progress and notes: stderr, so stdout stays the result (--json)."""
        click.echo(text, err=True)

    def interactive(self) -> bool:
        return sys.stdin.isatty() if self._interactive is None else self._interactive

    def confirm(self, question: str) -> None:
        click.confirm(question, abort=True, err=True)

    # ------------------------------------------------------------------ measured speeds

    def measured(self, facts: Facts, workload: str, *, quiet: bool, training: Optional[Training] = None
                 ) -> tuple[MeasuredSpeed, ...]:
        """Speeds from the newest cached bench of this machine, judged, for the backends whose
        installed build is the one measured and passed verification on that GPU; () with a note on
        stderr when there is no bench. Each result left out is said (unless *quiet*). With a
        *training* that names its model: only a bench at the model's shape (bench.training_shape)."""
        from attn_installer.bench import find_measured, measured_speeds, training_shape, untrusted  # noqa: PLC0415
        from attn_installer.builds import current_builds  # noqa: PLC0415
        from attn_installer.verify import record_status  # noqa: PLC0415

        matrix = self.matrix()
        shape = None
        if training is not None and training.model is not None:
            shape = training_shape(training.model, training.sequence_len, None, training.packing)
        report = find_measured(self.paths.checked(create=False).cache, facts, matrix, workload, shape)
        if report is None:
            if not quiet:
                at = (" at the model's shape (" + ", ".join(f"{k} {v}" for k, v in shape.items())
                      + "; `attn-install bench --axolotl-config FILE` measures it)" if shape else "")
                self.say("no `attn-install bench` result for this GPU, driver, torch and backend versions "
                         f"in {self.paths.cache}{at}: using the static ranking (run `attn-install bench` first)")
            return ()
        ok = [r for r in report.results if r.variant is None and r.status == "ok"]
        builds = current_builds(self.runner(), facts.python.executable or "python", matrix,
                                [r.backend for r in ok]) if ok else {}
        gpu = str(report.env.get("gpu") or "")
        verified: dict[tuple[str, str], str] = {}
        for r in ok:
            status = record_status(self.paths.cache, r.backend, r.build, gpu) if r.build else None
            if r.build and status:
                verified[(r.backend, r.build)] = status
        skip = untrusted(report, builds, verified)
        if not quiet:
            for r in report.results:
                if r.variant is None and r.status == "rejected":
                    self.say(f"not ranked by measurement: {r.backend}: rejected: {r.detail}")
            for name, why in skip.items():
                self.say(f"not ranked by measurement: {name}: {why}")
        vendor = facts.gpus[0].vendor if facts.gpus else None
        return measured_speeds(report, workload, matrix, vendor, exclude=skip)

    def verified(self, facts: Facts, names: tuple[str, ...]) -> dict[str, str]:
        """backend -> the verification record of its installed build on this machine's GPU ("passed",
        "failed: ..."), for the named backends that have one (one process in the target Python)."""
        from attn_installer.builds import current_builds  # noqa: PLC0415
        from attn_installer.verify import record_status  # noqa: PLC0415

        matrix = self.matrix()
        if not facts.gpus or not names:
            return {}
        builds = current_builds(self.runner(), facts.python.executable or "python", matrix, names)
        gpu = facts.gpus[0].name
        out: dict[str, str] = {}
        for name, build in builds.items():
            status = record_status(self.paths.cache, name, build, gpu)
            if status is not None:
                out[name] = status
        return out

    def merge_config(self, plan: Plan, path: Path, facts: Facts, *, dry_run: bool = False) -> None:
        """`--auto --merge FILE`: merge the installed backend's keys into the user's config."""
        from attn_installer.cli.inspect import merge_into  # noqa: PLC0415

        merge_into(self, plan, path, facts, dry_run=dry_run, notes=False, **self.merge_options)

    def context(self) -> dict[str, Any]:
        return {"app": self}

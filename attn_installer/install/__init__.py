"""Install: run a plan's steps in the target environment, verify, and restore exactly on failure.

    run.py         one run (install / build / --auto): probe, plan, installs, config, report, summary
    loop.py        one backend's step loop (lock, snapshot, preview + backup, run, verify, rollback)
    envstate.py    the environment as its own interpreter sees it
    backup.py      repack before a replace, and the rollback
    lock.py        the environment lock
    files.py       the files a step needs (pins, downloads checked against their recorded sha256)
    download.py    HEAD check and download
    wheelcache.py  built wheels by build key, and the wheelhouse
    diagnose.py    known failures (matrices/hints.toml)
    progress.py    build progress
    checkout.py    the content digest of a --source checkout
"""

from __future__ import annotations

from attn_installer.install.loop import Options, Outcome, Services, StepRecord, install_backend
from attn_installer.install.run import Host, InstallRequest, run_install, write_config

__all__ = ["Host", "InstallRequest", "Options", "Outcome", "Services", "StepRecord", "install_backend",
           "run_install", "write_config"]

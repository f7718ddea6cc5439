"""The base backup step of a restore alone: ``barman-cloud-restore`` against the local
engine's in-process restore (:mod:`paas_pitr.engines.local.baserestore`), interleaved, on
the same base backup, plus GNU tar on the same data decompressed beforehand (the floor).

    .venv/bin/python benchmarks/base_restore.py [--scale 40] [--repetitions 3]

An addon of the pro plan gets a pgbench database and an on-demand base backup (the engine's
own producer: its compression and parts); each round restores that backup into an empty
folder three ways, as the server's OS user would own it. Prints min / median seconds and
the ratio of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import local_stack, plain_base_backup, step, wait

from paas_pitr.context import Caller
from paas_pitr.engines.local.baserestore import BaseBackupRestore, S3BackupObjects
from paas_pitr.postgres.server import chown_tree, make_traversable
from paas_pitr.s3 import s3_client

CALLER = Caller("bench")
APP = "bench-app"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=40, help="pgbench scale (40 ~ 0.6 GiB)")
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="paas-pitr-base-restore-"))
    work.chmod(0o755)
    make_traversable(work)
    engine, state = await local_stack(work)
    times: dict[str, list[float]] = {"barman-cloud-restore": [], "in-process": [], "tar": []}
    try:
        addon = await state.addons.create_addon_generic(CALLER, APP, plan="pro")
        addon_id = addon.addon_id

        async def ready() -> Any:
            view = await state.addons.view(await state.addons.get_cluster(CALLER, APP, addon_id))
            return view.ready and view

        view = await wait(ready, "the addon", interval=0.1)
        instance = engine.instances[addon_id]
        pgbench = instance.server.binaries.tool("pgbench")
        step(f"pgbench -i -s {args.scale}")
        await asyncio.to_thread(
            subprocess.run,
            [pgbench, "-i", "-s", str(args.scale), "-q", view.connection["uri"]],
            check=True,
        )

        async def completed() -> list[Any]:
            listing = await state.backups.list_backups(CALLER, APP, addon_id, per_page=500)
            if any(b.status.value in ("pending", "running") for b in listing.items):
                return []
            return [b for b in listing.items if b.status.value == "completed"]

        count = len(await wait(completed, "the first backup", interval=0.5))
        step("base backup")
        await state.backups.create(CALLER, APP, addon_id)

        async def one_more() -> bool:
            return len(await completed()) > count

        await wait(one_more, "the backup", interval=0.2)
        config = engine.archiving.archive_of(engine.objects.get("Cluster", addon_id) or {})
        assert config is not None
        credentials = engine.archives.credentials(config)
        bucket, prefix = config.bucket_and_prefix
        folder = engine.root / "s3" / "data" / bucket / config.server_prefix / "base"
        backup_id = sorted(p.name for p in folder.iterdir())[-1]
        parts = sorted(p.name for p in (folder / backup_id).glob("*.tar*"))
        stored = sum((folder / backup_id / name).stat().st_size for name in parts)
        step(f"backup {backup_id}: {parts}, {stored / 2**20:.0f} MiB stored")
        tars = await asyncio.to_thread(plain_base_backup, folder / backup_id, work / "plain")
        target = work / "restore"

        def fresh() -> Path:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(mode=0o700)
            chown_tree(target, instance.user)
            return target / "data"

        for repetition in range(args.repetitions):
            step(f"round {repetition + 1}: barman-cloud-restore")
            data = fresh()
            started = time.monotonic()
            result = await engine.barman.run(
                [
                    engine.barman.tool("barman-cloud-restore"),
                    *engine.barman.endpoint_args(config),
                    config.destination,
                    config.server_name,
                    backup_id,
                    str(data),
                ],
                credentials,
                timeout=3600,
            )
            assert result.returncode == 0, result.error_text
            times["barman-cloud-restore"].append(time.monotonic() - started)

            step(f"round {repetition + 1}: in-process")
            data = fresh()
            restorer = BaseBackupRestore(
                S3BackupObjects(s3_client(engine.endpoint_url(), credentials), bucket),
                prefix,
                config.server_name,
                parallel=engine.settings.restore_base_backup_parallel,
                user=instance.user,
            )
            started = time.monotonic()
            await asyncio.to_thread(restorer.restore, backup_id, data, stop=threading.Event())
            times["in-process"].append(time.monotonic() - started)

            step(f"round {repetition + 1}: GNU tar of the decompressed parts")
            data = fresh()
            data.mkdir(mode=0o700)
            started = time.monotonic()
            for tar in tars:
                await asyncio.to_thread(
                    subprocess.run, ["tar", "-xf", str(tar), "-C", str(data)], check=True
                )
            times["tar"].append(time.monotonic() - started)
    finally:
        await state.audit.stop()
        await engine.close()
        shutil.rmtree(work, ignore_errors=True)
    reference = statistics.median(times["barman-cloud-restore"])
    print()
    print(f"{'base backup restored by':<28} {'min / median s':>16} {'/ barman-cloud-restore':>24}")
    for name, values in times.items():
        ratio = statistics.median(values) / reference
        print(f"{name:<28} {min(values):>7.2f} / {statistics.median(values):<6.2f} {ratio:>23.2f}x")


if __name__ == "__main__":
    asyncio.run(main())

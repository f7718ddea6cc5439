from __future__ import annotations

from pathlib import Path

import pytest

from paas_pitr.cnpg.schema import CRDS_DIR_ENV, CrdRegistry, find_crds_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def _crds_dir() -> Path | None:
    return find_crds_dir(REPO_ROOT)


@pytest.fixture(scope="session")
def crds_dir() -> Path:
    found = _crds_dir()
    if found is None:
        pytest.skip(
            f"CNPG CRDs not found: set {CRDS_DIR_ENV} or place shared/cnpg/crds beside the checkout"
        )
    return found


@pytest.fixture(scope="session")
def crd_registry(crds_dir: Path) -> CrdRegistry:
    return CrdRegistry.load(crds_dir)


@pytest.fixture(scope="session")
def crd_registry_v130(crds_dir: Path) -> CrdRegistry:
    # The v1.30.0 release directory has no ObjectStore CRD (that comes with the plugin):
    # borrow it from main so plugin-form objects can be checked against the release too.
    registry = CrdRegistry.load(crds_dir / "release-v1.30.0")
    for crd_file in crds_dir.glob("barmancloud.*.yaml"):
        for version in CrdRegistry.load_file(crd_file):
            registry.add(version)
    return registry

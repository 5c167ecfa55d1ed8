"""Picking a container by name, id or id prefix across engines."""
from __future__ import annotations

import pytest

from ovforensics.stores.base import Container, LayerInfo
from ovforensics.stores.registry import LookupError_, find_all, select
from ovforensics.evidence.rootfs import Root


def _c(engine, cid, *names):
    return Container(engine=engine, id=cid, names=list(names), image=None, state=None,
                     created=None, store="/s", upper=LayerInfo("upper", "/s/u"))


CANDIDATES = [_c("docker", "3ea4aa11", "web-1"), _c("podman", "3ea4bb22", "web-2"),
              _c("containerd", "9f00", "web-1-ctr"), _c("podman", "77aa", "web-1")]


def test_exact_name_full_id_and_unique_prefix():
    assert select("web-2", CANDIDATES).id == "3ea4bb22"
    assert select("/web-2", CANDIDATES).id == "3ea4bb22"  # docker's stored /name
    assert select("9f00", CANDIDATES).engine == "containerd"
    assert select("3ea4a", CANDIDATES).engine == "docker"


def test_ambiguous_name_lists_every_candidate():
    with pytest.raises(LookupError_) as err:
        select("web-1", CANDIDATES)
    message = str(err.value)
    assert "ambiguous" in message and "docker 3ea4aa11" in message and "podman 77aa" in message
    with pytest.raises(LookupError_, match="ambiguous"):
        select("3ea4", CANDIDATES)


def test_unknown_names_the_engines_searched():
    with pytest.raises(LookupError_, match=r"nope: no such container \(looked in: containerd, docker, podman\)"):
        select("nope", CANDIDATES)


def test_engine_and_data_root_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--engine"):
        list(find_all(Root(str(tmp_path)), engine="lxc"))
    with pytest.raises(ValueError, match="--data-root needs --engine"):
        list(find_all(Root(str(tmp_path)), data_root="/x"))
    assert list(find_all(Root(str(tmp_path)))) == []  # an empty evidence root: nothing, no error

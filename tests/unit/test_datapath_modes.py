"""Datapath = "auto" | "xdp" | "tc" (docs/spec.md §4a, §10): the config key,
the XDP attachment on a veth (attach, replace, detach, leftovers, a program
that is not wgmux's), what `serve` attaches for each setting, reload
refusing a change, and what `show` and `check` say.  The packets
themselves: test_datapath.py's golden table (both programs) and
tests/integration/test_reflect.py (both modes end to end)."""

from __future__ import annotations

import logging
import os

import pytest

from netlab.netns import inside
from wgmux import config as cmod
from wgmux.config import ConfigError, load, parse

bcc = pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF, namespaces)")

from wgmux import daemon as dmod  # noqa: E402
from wgmux import preflight, xdp  # noqa: E402
from wgmux.datapath import Datapath  # noqa: E402
from wgmux.model import DatapathError  # noqa: E402

HUB = 51820
BASE = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "a0"\n'


# ---- the config key -----------------------------------------------------------

def test_config_key():
    assert parse(BASE).datapath == "auto"
    for value in cmod.DATAPATHS:
        assert parse(BASE + f'Datapath = "{value}"\n').datapath == value
    for bad, shown in (('"XDP"', '"XDP" (string)'), ('"native"', '"native" (string)'),
                       ("1", "1 (integer)")):
        with pytest.raises(ConfigError) as e:
            parse(BASE + f"Datapath = {bad}\n", path="cfg.toml")
        assert e.value.problems == (
            f'cfg.toml:5: [Interface] Datapath: expected "auto", "xdp" or "tc", got {shown}',)


def test_example_config_names_the_key():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "examples" / "config.toml").read_text()
    assert '# Datapath = "auto"' in text


# ---- the XDP slot of a veth ------------------------------------------------------

@pytest.fixture(scope="module")
def dp():
    with Datapath(HUB) as d:
        yield d


def _foreign_xdp():
    """A loaded XDP program that is not wgmux's."""
    from bcc import BPF
    b = BPF(text=b"int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    return b, b.load_func(b"other_xdp", BPF.XDP).fd


def test_attach_replace_detach(dp, veth):
    ns = veth.netns
    assert xdp.attached("a0", ns) is None
    dp.attach("a0", netns=ns)
    dp.attach_xdp("a0", netns=ns)
    try:
        now = xdp.attached("a0", ns)
        assert (now.mode, now.name, now.prog_id) == ("driver", "wgmux_xdp",
                                                     xdp.prog_id(dp.program.xdp_fd))
        assert "prog/xdp" in veth.run(["ip", "link", "show", "a0"]).stdout
        with pytest.raises(DatapathError, match="already attached"):
            dp.attach_xdp("a0", netns=ns)
        with Datapath(HUB) as new:
            new.attach("a0", netns=ns, replace=True)
            new.attach_xdp("a0", netns=ns, replace=True)
            assert new.replaced_xdp.prog_id == now.prog_id
            dp.detach()      # must not remove the successor's
            assert xdp.attached("a0", ns).prog_id == xdp.prog_id(new.program.xdp_fd)
            new.close(keep_attached=True)    # as serve --keep-attached
        kept = xdp.attached("a0", ns)
        assert kept is not None and kept.name == "wgmux_xdp"
        assert xdp.remove_leftovers("a0", ns) == [f"XDP program wgmux_xdp (id {kept.prog_id}) "
                                                  f"on a0"]
        assert xdp.attached("a0", ns) is None
        assert xdp.remove_leftovers("a0", ns) == []
    finally:
        dp.detach()
        xdp.remove_leftovers("a0", ns)
    assert dp.xdp_attachments == []


def test_detach_removes_both(dp, veth):
    dp.attach("a0", netns=veth.netns)
    dp.attach_xdp("a0", netns=veth.netns)
    dp.detach()
    assert xdp.attached("a0", veth.netns) is None
    assert "wgmux" not in veth.run(["tc", "filter", "show", "dev", "a0", "ingress"]).stdout


def test_foreign_program_is_never_replaced_or_removed(dp, veth):
    b, fd = _foreign_xdp()
    try:
        with inside(veth.netns):
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                xdp._set(ipr, ipr.link_lookup(ifname="a0")[0], fd, xdp.XDP_FLAGS_DRV_MODE)
        with pytest.raises(DatapathError, match="not wgmux's .*other_xdp"):
            dp.attach_xdp("a0", netns=veth.netns, replace=True)
        assert xdp.remove_leftovers("a0", veth.netns) == []
        assert xdp.attached("a0", veth.netns).name == "other_xdp"
    finally:
        b.cleanup()


def test_no_native_xdp_is_a_datapath_error(dp, veth):
    with pytest.raises(DatapathError, match="no native XDP"):
        dp.attach_xdp("lo", netns=veth.netns)


# ---- what serve attaches ----------------------------------------------------------

@pytest.fixture
def daemon(tmp_path, dp, veth):
    """A Daemon on the module's datapath (not started), its Interface a0 in
    the veth's namespace; `serve(setting)` runs its attach step there."""
    path = tmp_path / "config.toml"

    class Serve:
        def __call__(self, setting: str, interface: str = "a0") -> dmod.Daemon:
            path.write_text(BASE.replace('"a0"', f'"{interface}"')
                            + f'Datapath = "{setting}"\n')
            d = dmod.Daemon(load(path))
            d.datapath = dp
            with inside(veth.netns):
                dp.attach(interface, replace=True)
                d.mode = d._attach_xdp(interface)
            return d

    yield Serve()
    dp.detach()
    xdp.remove_leftovers("a0", veth.netns)


def test_serve_auto_keeps_to_tc_on_veth(daemon, veth, caplog):
    with caplog.at_level(logging.INFO, logger="wgmux"):
        d = daemon("auto")
    assert d.mode == "tc" and xdp.attached("a0", veth.netns) is None
    assert 'Datapath "auto": TC ingress only on a0: a veth\'s XDP_TX' in caplog.text


def test_serve_xdp_attaches_then_tc_removes_it(daemon, dp, veth, caplog):
    d = daemon("xdp")
    assert d.mode == "xdp" and xdp.attached("a0", veth.netns).name == "wgmux_xdp"
    assert d.status()["datapath"] == "xdp" and d.status()["datapath_setting"] == "xdp"
    # a restart with another setting (its own program: the module's is ours)
    dp._attached_xdp.clear()
    with caplog.at_level(logging.INFO, logger="wgmux"):
        d = daemon("tc")
    assert d.mode == "tc" and xdp.attached("a0", veth.netns) is None
    assert "removed the XDP program wgmux_xdp" in caplog.text and "Datapath = 'tc' now" in \
        caplog.text


def test_serve_xdp_takes_over_a_predecessors_program(daemon, veth, caplog):
    with Datapath(HUB) as old:
        old.attach("a0", netns=veth.netns)
        old.attach_xdp("a0", netns=veth.netns)
        before = xdp.attached("a0", veth.netns).prog_id
        old.close(keep_attached=True)
    with caplog.at_level(logging.INFO, logger="wgmux"):
        d = daemon("xdp")
    assert d.mode == "xdp" and xdp.attached("a0", veth.netns).prog_id != before
    assert ("took over from the XDP program a previous wgmux left attached to a0 "
            f"(id {before})") in caplog.text


def test_serve_xdp_fails_clearly_without_native_xdp(daemon):
    with pytest.raises(dmod.ServeError, match='Datapath = "xdp" .*lo.*no native XDP'):
        daemon("xdp", interface="lo")


def test_serve_auto_falls_back_without_native_xdp(daemon, caplog):
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert daemon("auto", interface="lo").mode == "tc"
    assert "no native XDP" in caplog.text


# ---- reload, show, check -------------------------------------------------------------

def test_reload_refuses_a_new_datapath(tmp_path, monkeypatch, dp, caplog):
    from wgmux.discovery import DeviceInfo
    monkeypatch.setattr(dmod.discovery, "read_device",
                        lambda name, wg_util="wg": DeviceInfo(name, HUB, None, {}, "test"))
    path = tmp_path / "config.toml"
    path.write_text(BASE)
    d = dmod.Daemon(load(path))
    d.datapath = dp
    path.write_text(BASE + 'Datapath = "tc"\n')
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert not d.reload()
    assert ("reload rejected, the running config stays: Datapath changed from 'auto' to 'tc'"
            in caplog.text and "restart wgmux serve (sessions are kept)" in caplog.text)
    assert d.config.datapath == "auto"


def test_show_says_which(dp):
    from wgmux.cli import format_status
    st = {"interface": "eth0", "device": "wg0", "hub_port": HUB, "pid": 1, "started": 0,
          "now": 10, "peers": [], "sessions": [], "counters": {}, "datapath": "xdp",
          "datapath_setting": "auto"}
    assert ('  datapath: XDP in the driver, in front of TC ingress (Datapath = "auto")'
            in format_status(st))
    st["datapath"] = "tc"
    assert '  datapath: TC ingress (Datapath = "auto")' in format_status(st)


def test_check_says_what_serve_will_do(dp, veth):
    def check(setting):
        with inside(veth.netns):
            return preflight.check_xdp(parse(BASE + f'Datapath = "{setting}"\n'))

    assert check("tc").status == preflight.OK and "TC ingress only" in check("tc").text
    r = check("auto")
    assert r.status == preflight.OK and "TC ingress only on 'a0'" in r.text
    r = check("xdp")
    assert r.status == preflight.WARN and "lost unless the peer takes it" in r.text
    dp.attach_xdp("a0", netns=veth.netns)
    try:
        r = check("auto")
        assert r.status == preflight.OK and "attached to 'a0' now (driver" in r.text
    finally:
        dp.detach()
    b, fd = _foreign_xdp()
    try:
        with inside(veth.netns):
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                xdp._set(ipr, ipr.link_lookup(ifname="a0")[0], fd, xdp.XDP_FLAGS_DRV_MODE)
        assert check("xdp").status == preflight.FAIL
        assert check("auto").status == preflight.WARN
    finally:
        b.cleanup()

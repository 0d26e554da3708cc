"""The bridge's fixed MAC: locally administered, unicast, one per bridge name."""

from __future__ import annotations

from localcluster.nodeagent.netns import bridge_mac


def test_the_bridge_mac_is_locally_administered_unicast_and_follows_the_name() -> None:
    mac = bridge_mac("lcbr-abc123")
    first = int(mac.split(":")[0], 16)
    assert len(mac.split(":")) == 6
    assert first & 0x02 and not first & 0x01
    assert bridge_mac("lcbr-abc123") == mac != bridge_mac("lcbr-def456")

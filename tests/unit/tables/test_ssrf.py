"""The SSRF rules, the pure part: which addresses the dispatcher refuses by default, what the
operator's allow-list lets through, and which hosts a per-message endpoint may use a secretRef
for."""

from __future__ import annotations

import ipaddress

import pytest

from deliverytrack.models.outbound import allowed_host, host_pattern
from deliverytrack.tables.outbound import (
    AllowList,
    host_matches,
    refusal_of_address,
    secret_allowed_for,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "not globally routable"),
        ("fec0::1", "site-local"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("198.18.0.1", "private"),
        ("192.0.2.1", "private"),
        # IPv6 spellings of refused IPv4 addresses are refused for what they stand for.
        ("::ffff:127.0.0.1", "loopback (127.0.0.1 inside)"),
        ("::ffff:169.254.169.254", "metadata (169.254.169.254 inside)"),
        ("2002:7f00:1::", "loopback (127.0.0.1 inside)"),
        ("64:ff9b::a00:1", "private (10.0.0.1 inside)"),
    ],
)
def test_addresses_that_are_not_public_are_refused_with_the_reason(
    address: str, reason: str
) -> None:
    assert refusal_of_address(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_called(address: str) -> None:
    assert refusal_of_address(ipaddress.ip_address(address)) is None


def test_the_allow_list_lets_networks_addresses_and_host_names_through() -> None:
    allowed = AllowList.parse(
        ["127.0.0.1", "10.0.0.0/8", "[::1]", "169.254.0.0/16", "hooks.internal", "*.corp.example"]
    )
    ip = ipaddress.ip_address
    assert allowed.refusal(ip("127.0.0.1")) is None
    assert allowed.refusal(ip("127.0.0.2")) == "loopback"
    assert allowed.refusal(ip("10.200.0.7")) is None
    assert allowed.refusal(ip("::1")) is None
    assert allowed.refusal(ip("::ffff:127.0.0.1")) is None  # the same address
    assert allowed.refusal(ip("192.168.0.1")) == "private"
    assert allowed.refusal(ip("169.254.9.9")) is None
    # A metadata address is allowed only by exactly that address, never by a broad network.
    assert allowed.refusal(ip("169.254.169.254")) == "metadata"
    assert AllowList.parse(["169.254.169.254"]).refusal(ip("169.254.169.254")) is None
    assert allowed.allows_host("hooks.internal") and allowed.allows_host("HOOKS.internal.")
    assert allowed.allows_host("a.corp.example") and allowed.allows_host("b.a.corp.example")
    assert not allowed.allows_host("corp.example") and not allowed.allows_host("evilcorp.example")
    assert not allowed.allows_host("hooks.internal.evil.example")
    assert not AllowList().allows_host("localhost")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "300.1.1.1/8", "a..b", "*.", "", "exa mple"])
def test_allow_list_entries_must_be_cidrs_addresses_or_host_names(entry: str) -> None:
    with pytest.raises(ValueError):
        allowed_host(entry)


def test_host_rules_are_normalised_and_wildcards_match_names_below_only() -> None:
    assert host_pattern("Hooks.Example.COM.") == "hooks.example.com"
    assert host_pattern("*.Example.com") == "*.example.com"
    assert host_pattern("例え.jp") == "xn--r8jz45g.jp"
    assert host_pattern("[::1]") == "::1"
    assert host_matches("a.example.com", "*.example.com")
    assert not host_matches("example.com", "*.example.com")
    assert not host_matches("aexample.com", "*.example.com")


def test_a_secret_ref_is_for_the_hosts_it_is_bound_to() -> None:
    bound = ("hooks.acme.example", "*.acme.example")
    assert secret_allowed_for("hooks.acme.example", bound)
    assert secret_allowed_for("eu.acme.example", bound)
    assert not secret_allowed_for("acme.example", bound)
    assert not secret_allowed_for("evil.example", bound)
    assert not secret_allowed_for("hooks.acme.example", ())
    assert not secret_allowed_for("a..b", bound)

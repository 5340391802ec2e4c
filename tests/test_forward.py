"""The forward step's header rules on their own: hop-by-hop filtering and trusted proxies."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from lookup_proxy.forward import TrustedProxies, end_to_end


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    """RFC 9110 §7.6.1 headers and every header Connection names never cross."""
    headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Connection", "close, X-Hop"),
                ("Connection", "X-Other"),
                ("X-Hop", "1"),
                ("X-Other", "2"),
                ("Keep-Alive", "5"),
                ("Transfer-Encoding", "chunked"),
                ("TE", "trailers"),
                ("Trailer", "X"),
                ("Upgrade", "h2c"),
                ("Proxy-Authorization", "x"),
                ("X-Kept", "yes"),
                ("Accept", "application/json"),
            ]
        )
    )
    assert list(end_to_end(headers).items()) == [("X-Kept", "yes"), ("Accept", "application/json")]


def test_extra_drops_are_applied_case_insensitively() -> None:
    """Headers only the proxy may set are dropped whatever their case."""
    headers = CIMultiDictProxy(CIMultiDict([("authorization", "Bearer t"), ("X-A", "1")]))
    assert list(end_to_end(headers, frozenset({"authorization"})).items()) == [("X-A", "1")]


def test_untrusted_peers_are_the_client() -> None:
    """Without trusted proxies the connecting address is the client, whatever XFF says."""
    proxies = TrustedProxies([])
    assert proxies.client_chain("10.1.2.3", "203.0.113.9") == ("10.1.2.3", "10.1.2.3")


def test_a_trusted_chain_is_walked_from_the_right() -> None:
    """The client is the right-most address that is not a trusted proxy."""
    proxies = TrustedProxies(["10.0.0.0/8", "192.168.1.1"])
    client, chain = proxies.client_chain("10.0.0.5", "198.51.100.7, 203.0.113.9, 192.168.1.1")
    assert client == "203.0.113.9"
    assert chain == "198.51.100.7, 203.0.113.9, 192.168.1.1, 10.0.0.5"


def test_garbage_addresses_are_never_trusted() -> None:
    """A peer that is not an IP address is not a trusted proxy."""
    proxies = TrustedProxies(["0.0.0.0/0"])
    assert not proxies.trusts("not-an-ip")
    assert not proxies.trusts(None)

import pytest

from registry_cache.urls import UnsafeUrl, canonical_resource, check_server_url, refused_address


@pytest.mark.parametrize(
    "url",
    [
        "https://presto.mcp.example.com/mcp",
        "http://127.0.0.1:8080/mcp",
        "http://localhost:9/mcp",
        "http://[::1]:9/mcp",
        "https://10.1.2.3/mcp",
    ],
)
def test_acceptable_urls_pass_unchanged(url: str) -> None:
    assert check_server_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://presto.example.com/mcp", "plain http"),
        ("http://10.0.0.5/mcp", "plain http"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("http://169.254.169.254/", "metadata"),
        ("https://metadata.google.internal/computeMetadata/v1", "metadata"),
        ("https://169.254.10.1/mcp", "link-local"),
        ("https://[fe80::1]/mcp", "link-local"),
        ("https://[::ffff:169.254.169.254]/mcp", "link-local"),
        ("https://[fd00:ec2::254]/mcp", "metadata"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.com/x", "scheme"),
        ("https://user:pw@example.com/mcp", "credentials"),
        ("https:///nohost", "no host"),
        ("https://0.0.0.0/mcp", "unspecified"),
        ("https://example.com:99999/mcp", "malformed"),
    ],
)
def test_unsafe_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        check_server_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://2852039166/latest/meta-data", "metadata"),  # decimal
        ("https://0xA9FEA9FE/mcp", "metadata"),  # hex
        ("https://0xa9.0xfe.0xa9.0xfe/mcp", "metadata"),  # hex per part
        ("https://0251.0376.0251.0376/mcp", "metadata"),  # octal
        ("https://169.254.43518/mcp", "metadata"),  # short form: the last part fills two bytes
        ("https://169.16689662/mcp", "metadata"),
        ("https://169.254.169.254./mcp", "metadata"),  # a trailing dot
        ("https://[::ffff:a9fe:a9fe]/mcp", "metadata"),  # IPv4-mapped, written in hex
        ("https://[::a9fe:a9fe]/mcp", "metadata"),  # IPv4-compatible
        ("https://[64:ff9b::a9fe:a9fe]/mcp", "metadata"),  # NAT64
        ("https://2851995905/mcp", "link-local"),  # 169.254.0.1
        ("https://0/mcp", "unspecified"),
        ("https://0.0.0.7/mcp", "unspecified"),
        ("https://metadata.google.internal./computeMetadata/v1", "metadata"),
    ],
)
def test_forbidden_addresses_are_refused_however_they_are_written(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        check_server_url(url)


@pytest.mark.parametrize("url", ["https://10.1.2.3/mcp", "https://0x0a010203/mcp", "http://127.1:8080/mcp"])
def test_private_and_loopback_addresses_stay_allowed_in_any_spelling(url: str) -> None:
    assert check_server_url(url) == url


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.169.254", True),
        ("::ffff:169.254.169.254", True),
        ("fe80::1%eth0", True),
        ("fd00:ec2::254", True),
        ("0.0.0.0", True),
        ("::", True),
        ("10.0.0.5", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("2001:db8::1", False),
    ],
)
def test_the_connect_time_rule_judges_resolved_addresses(address: str, refused: bool) -> None:
    assert (refused_address(address) is not None) is refused


def test_resources_that_an_identity_provider_may_treat_as_one_compare_equal() -> None:
    same = {
        canonical_resource(r)
        for r in (
            "https://presto.example.com/mcp",
            "HTTPS://Presto.Example.COM/mcp/",
            "https://presto.example.com:443/mcp",
            "https://presto.example.com./mcp",
        )
    }
    assert len(same) == 1
    assert canonical_resource("https://presto.example.com/mcp") != canonical_resource(
        "https://presto.example.com/v2"
    )

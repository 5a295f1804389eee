import pytest

from registry_cache.urls import UnsafeUrl, check_server_url


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

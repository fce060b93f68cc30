import pytest

from nomad_rkt_driver.config.durations import Duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("0", 0.0),
        ("-5s", -5.0),
        ("1.5s", 1.5),
        ("2h45m", 9900.0),
        ("10us", 1e-5),
    ],
)
def test_parses_go_durations(text: str, seconds: float) -> None:
    assert Duration.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "", "s", "5 s", "1d", "abc", "5m-3s"])
def test_rejects_non_durations_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        Duration.parse(text)


@pytest.mark.parametrize("text", ["30s", "1m30s", "1h", "2h45m", "500ms", "0s", "1.5s"])
def test_go_string_round_trips(text: str) -> None:
    assert Duration.parse(Duration.parse(text).go_string()) == Duration.parse(text)
    assert Duration.parse(text).go_string() == text

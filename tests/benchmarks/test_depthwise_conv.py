"""benchmarks/depthwise_conv.py on small batches: one row per shape, both dtypes timed."""

from benchmarks import depthwise_conv


def test_prints_a_row_per_shape(capsys):
    assert depthwise_conv.main(["--batch-size", "1", "--threads", "1", "--repeats", "1", "--shapes", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 64, 56,")]
    assert len(rows) == 2 and all(row.endswith("x |") for row in rows)

"""hhld.torch.sinks on their own (the monitor's use of them is in test_monitor*.py): JSONL keeps
non-finite values as strings, CSV rewrites its header when a column appears, TensorBoard gets
the numbers (not booleans, not the step) and the regime as text."""
import csv
import json

from hhld.torch.sinks import CSVSink, JSONLSink, TensorBoardSink


def test_jsonl_writes_one_object_per_row_and_flushes(tmp_path):
    s = JSONLSink(tmp_path / "r.jsonl")
    s.write({"step": 0, "C": float("-inf"), "ok": True})
    # flushed at every row: readable before close
    assert json.loads((tmp_path / "r.jsonl").read_text()) == {"step": 0, "C": "-inf", "ok": True}
    s.write({"step": 1, "C": 2.0})
    s.close()
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1]) == {"step": 1, "C": 2.0}


def test_csv_appends_and_rewrites_on_a_new_column(tmp_path):
    s = CSVSink(tmp_path / "r.csv")
    s.write({"step": 0, "a": 1})
    s.write({"step": 1, "a": 2})
    first = (tmp_path / "r.csv").read_text().splitlines()
    assert first == ["step,a", "0,1", "1,2"]
    s.write({"step": 2, "b": 5})                      # a new column: the file is rewritten with it
    s.close()
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"] and rows[0]["b"] == "" and rows[2] == {"step": "2", "a": "", "b": "5"}


class _Writer:
    def __init__(self):
        self.scalars, self.texts, self.closed = [], [], False

    def add_scalar(self, tag, v, step):
        self.scalars.append((tag, v, step))

    def add_text(self, tag, v, step):
        self.texts.append((tag, v, step))

    def close(self):
        self.closed = True


def test_tensorboard_sink_writes_numbers_and_the_regime_and_leaves_a_given_writer_open():
    w = _Writer()
    s = TensorBoardSink(w, prefix="x")
    s.write({"step": 7, "C": 1.5, "n": 3, "flag": True, "name": "abc", "regime": "quantum"})
    s.close()
    assert w.scalars == [("x/C", 1.5, 7), ("x/n", 3, 7)]
    assert w.texts == [("x/regime", "quantum", 7)] and not w.closed

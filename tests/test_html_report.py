"""`robench report --format html`: one offline page holding every row of the tidy CSV."""

import base64
import csv
import io
from html.parser import HTMLParser

import pytest

from robench.workspace import RESULT_COLUMNS, append_csv


def result_row(**values):
    """A results-CSV row with plausible defaults (accuracies as fractions, eps in data units)."""
    row = {
        "checkpoint": "base", "dataset": "digits", "arch": "small-cnn", "defense": "none", "defense_params": {},
        "stochastic": False, "stochastic_by": "", "num_classes": 10, "attack": "fgsm", "threat_model": "white-box",
        "source": None, "norm": "Linf", "eps": 8 / 255, "steps": None, "step_size": None, "restarts": 1, "targeted": None,
        "eot": 1, "bpda": False, "attack_options": {}, "n": 200, "runs": 1, "clean_acc": 0.985, "clean_acc_std": 0.0,
        "robust_acc": 0.9, "robust_acc_std": 0.0, "robust_majority": 0.9, "mean_linf": 0.03, "mean_l2": 0.5,
        "train_mode_left": False, "zero_gradients": 0.0, "saturated": 0.0, "converged": None, "converged_drop": None,
        "batch_size": 256, "forward_passes": 400, "backward_passes": 200, "seconds": 1.5, "seed": 0,
        "versions": {"robench": "0.1.0", "torch": "2.x"}, "timestamp": "2026-01-01T00:00:00",
        "value_range": [0.0, 1.0],
    }
    row.update(values)
    assert set(row) == set(RESULT_COLUMNS)
    return row


def add_rows(workspace, rows):
    append_csv(workspace.results / "attacks.csv", RESULT_COLUMNS, rows)


def write_meta(workspace, name, **extra):
    meta = {"name": name, "arch": "small-cnn", "dataset": "digits", "defense": "none", "input_shape": [1, 8, 8],
            "num_classes": 10, "mean": [0.5], "std": [0.5], "seed": 0, "epochs": 10, "status": "complete",
            "config": {"epochs": 10, "lr": 0.05, "seed": 0}, "history": [{"epoch": 1, "loss": 2.0}]}
    workspace.write_meta(name, {**meta, **extra})


@pytest.fixture
def filled(workspace):
    """Two checkpoints, FGSM and PGD at two budgets, a verdict row, and PGD weaker than FGSM
    for `odd<b>` (a sanity flag); its name carries markup that must come out escaped, and it
    has no meta.json."""
    rows = []
    for name, base in (("base", 0.9), ("odd<b>", 0.5)):
        for eps, drop in ((8 / 255, 0.0), (32 / 255, 0.3)):
            rows.append(result_row(checkpoint=name, attack="fgsm", eps=eps, robust_acc=base - drop))
            pgd = base - drop + (0.2 if name == "odd<b>" else -0.05)
            rows.append(result_row(checkpoint=name, attack="pgd", eps=eps, steps=10, step_size=1 / 255, robust_acc=pgd))
        rows.append(result_row(checkpoint=name, attack="verdict", eps=8 / 255, robust_acc=base - 0.1, attack_options={"set_by": "aa-apgd"}))
    add_rows(workspace, rows)
    write_meta(workspace, "base", defense_params={"note": "<script>alert(1)</script>"})
    return workspace


class Page(HTMLParser):
    """What the tests look at: tables by id (rows of cell texts), resource URLs, images."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.urls, self.images, self.scripts = {}, [], [], 0
        self._table, self._row, self._cell = None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text):
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_html_holds_every_csv_row_and_needs_no_network(filled, cli, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", "--format", "html", "--output", out)
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    page = parse(text)

    tidy = list(csv.reader(io.StringIO(cli("report", "--format", "csv").stdout)))
    assert page.tables["rows"][0] == tidy[0] == RESULT_COLUMNS
    assert page.tables["rows"][1:] == tidy[1:] and len(tidy) == 11

    # Nothing is fetched: in-page anchors only, images inline as base64 PNG.
    assert page.urls and all(url.startswith(("#", "data:image/png;base64,")) for url in page.urls)
    assert "http://" not in text and "https://" not in text and "url(" not in text
    (image,) = page.images
    assert base64.b64decode(image.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert page.scripts == 1 and "<link" not in text

    # Workspace text is data, never markup.
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "odd<b>" not in text and "odd&lt;b&gt;" in text


def test_html_tables_flags_verdicts_and_provenance(filled):
    from robench.html_report import render_html
    from robench.report import Filters, load_results

    rows = load_results(filled, Filters())
    text = render_html(rows, filled, curves=False)
    page = parse(text)
    wide = next(table for table in page.tables.values() if table[0][0] == "attack eps")
    assert wide[0] == ["attack eps", "base", "odd<b>"]
    labels = [row[0] for row in wide[1:]]
    assert labels == ["clean", "verdict 8", "fgsm 8", "fgsm 32", "pgd 8", "pgd 32"]
    assert wide[labels.index("pgd 32") + 1] == ["pgd 32", "55.0", "40.0"]
    # The best value of each row is marked; the clean row ties, so both cells are.
    best = text.split('class="best"')
    assert len(best) - 1 == 7
    assert "sortable" in text and "addEventListener" in text

    assert "iterative-weaker-than-single-step" in text and "Why it is suspicious" in text
    assert "set by aa-apgd" in text
    assert "clean: accuracy on the attacked test subset (n=200)" in text
    # meta.json settings of the checkpoint that has one; the other says why it has none.
    assert "config_hash" not in text and "&quot;lr&quot;: 0.05" in text
    assert "No settings: unknown checkpoint" in text
    assert "history" not in [row[0] for table in page.tables.values() for row in table if row]


def test_html_stdout_and_bad_inputs(filled, cli, tmp_path):
    result = cli("report", "--format", "html", "--checkpoint", "base")
    assert result.exit_code == 0 and result.stdout.startswith("<!DOCTYPE html>") and "odd&lt;b&gt;" not in result.stdout
    bad = cli("report", "--format", "htm")
    assert bad.exit_code == 2 and "html" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    folder = tmp_path / "out"
    folder.mkdir()
    assert cli("report", "--format", "html", "--output", folder).exit_code == 2
    none = cli("report", "--format", "html", "--dataset", "mnist")
    assert none.exit_code == 2 and "no result rows match" in none.stderr


def test_flag_docs_become_escaped_html(tmp_path):
    from robench.html_report import flag_explanations

    doc = tmp_path / "flags.md"
    doc.write_text("# Flags\n\n## `train-mode-left`\n\n**Severity: medium.** A <b> and `x<y`.\n\n- one\n- two\n\n```sh\nrobench attack <x>\n```\n\n---\n\n## References\n")
    html = flag_explanations(doc)["train-mode-left"]
    assert html.startswith("<p><strong>Severity: medium.</strong> A &lt;b&gt; and <code>x&lt;y</code>.</p>")
    assert "<ul><li>one</li><li>two</li></ul>" in html and "<pre>robench attack &lt;x&gt;\n</pre>" in html
    assert flag_explanations(tmp_path / "missing.md") == {}
    # The repository's docs/flags.md explains every flag robench raises.
    from robench.flags import FLAG_DOCS

    assert set(flag_explanations()) == set(FLAG_DOCS)

import base64

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kdnas_deploy.pipeline.report import ModelRow, Report, write_report  # noqa: E402


def test_report_embeds_pictures_and_lists_models(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    png = tmp_path / "pareto.png"
    fig.savefig(png)
    plt.close(fig)
    report = Report(
        title="kdnas-deploy run",
        budgets=[("cpu", 3.5)],
        chosen_arch="L=3,H=384,A=12,F=1536",
        rows=[
            ModelRow("teacher", "L=6,H=384,A=12,F=1536", 22.7, "accuracy", 0.91, 10.0, 10.5, 1.0),
            ModelRow("student", "L=3,H=384,A=12,F=1536", 17.4, "accuracy", 0.89, 3.3, 3.4, 3.09),
        ],
        figures=[("Search: Pareto front", png)],
    )
    md, page = write_report(report, tmp_path)
    text = md.read_text()
    assert "| student | L=3,H=384,A=12,F=1536 |" in text and "3.09x" in text and "](pareto.png)" in text
    body = page.read_text()
    assert base64.b64encode(png.read_bytes()).decode()[:100] in body
    assert "cpu: 3.50 ms" in body

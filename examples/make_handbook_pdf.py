"""Generate examples/handbook/handbook.pdf, a real multi-page PDF, from handbook_source.

The PDF is committed so a fresh clone needs no PDF library; run this script
(`python examples/make_handbook_pdf.py`, needs fpdf2 from the dev extra) after
editing handbook_source.py.
"""

from pathlib import Path

from fpdf import FPDF
from handbook_source import PAGES, TITLE

OUT = Path(__file__).parent / "handbook" / "handbook.pdf"


def build(out: Path = OUT) -> Path:
    pdf = FPDF(format="A4")
    pdf.set_title(TITLE)
    pdf.set_author("Fernhill Analytics People Team")
    pdf.set_creation_date(__import__("datetime").datetime(2026, 1, 14))
    pdf.set_auto_page_break(auto=False)
    for number, (heading, paragraphs) in enumerate(PAGES, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 9, heading)
        pdf.ln(4)
        pdf.set_font("Helvetica", "", 11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(3)
        pdf.set_y(-20)
        pdf.set_font("Helvetica", "I", 9)
        pdf.cell(0, 6, f"{TITLE} - page {number}", align="C")
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


if __name__ == "__main__":
    print(build())

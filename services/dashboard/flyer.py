"""The printable one-page flyer (PDF) of an approved alert: its text in every language and
a QR code that opens a text message JOIN <region> to the alerts number (the public can
subscribe from the poster). fpdf2 draws the page, segno makes the QR matrix (drawn as
squares: nothing rasterised)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import segno
from fpdf import FPDF

LANGUAGE_NAMES = {"en": "English", "es": "Español", "fr": "Français"}


@dataclass(frozen=True)
class Flyer:
    title: str  # e.g. "Drug alert: fentanyl in Kings County"
    severity: str
    region_name: str
    texts: dict[str, str]  # language -> approved SMS text
    approved_by: str | None
    approved_at: datetime | None
    sms_number: str  # the number people text JOIN to
    join_keyword: str  # e.g. "JOIN 98101"


def join_uri(number: str, keyword: str) -> str:
    """What the QR code holds: a text message ready to send (`SMSTO:` is read by iOS and
    Android camera apps)."""
    return f"SMSTO:{number}:{keyword}"


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1: anything else becomes '?' rather than failing."""
    return text.encode("latin-1", "replace").decode("latin-1")


def flyer_pdf(flyer: Flyer) -> bytes:
    pdf = FPDF(format="Letter", unit="mm")
    pdf.set_title(_latin1(flyer.title))
    pdf.set_author("Lookout")
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_margins(18, 18, 18)
    width = pdf.w - 36
    pdf.set_fill_color(200, 16, 46)
    pdf.rect(0, 0, pdf.w, 30, style="F")
    pdf.set_xy(18, 8)
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 22)
    pdf.cell(width, 14, _latin1(flyer.title), align="L")
    pdf.set_text_color(0, 0, 0)
    pdf.set_xy(18, 38)
    pdf.set_font("Helvetica", "", 11)
    approved = flyer.approved_at.strftime("%Y-%m-%d %H:%M UTC") if flyer.approved_at else "-"
    pdf.multi_cell(width, 6, _latin1(
        f"Severity: {flyer.severity}.  Area: {flyer.region_name}.  "
        f"Approved {approved}" + (f" by {flyer.approved_by}." if flyer.approved_by else ".")))
    pdf.ln(4)
    budget = 150.0 / max(len(flyer.texts), 1)  # mm of height per language
    size = 16 if budget >= 50 else 13 if budget >= 35 else 11
    for lang, text in sorted(flyer.texts.items(), key=lambda kv: (kv[0] != "en", kv[0])):
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(width, 7, _latin1(LANGUAGE_NAMES.get(lang, lang)), new_x="LMARGIN",
                 new_y="NEXT")
        pdf.set_font("Helvetica", "", size)
        pdf.multi_cell(width, size * 0.5, _latin1(text))
        pdf.ln(5)
    # the QR code and how to join, at the foot of the page
    qr = segno.make(join_uri(flyer.sms_number, flyer.join_keyword), error="m")
    matrix = list(qr.matrix)
    side = 45.0
    module = side / (len(matrix) + 8)  # 4 modules of quiet zone on each side
    x0, y0 = 18.0, pdf.h - 18 - side
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                pdf.rect(x0 + (c + 4) * module, y0 + (r + 4) * module, module, module,
                         style="F")
    pdf.set_xy(x0 + side + 8, y0 + 8)
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(width - side - 8, 8, _latin1(
        f"Get these warnings by text: send {flyer.join_keyword} to {flyer.sms_number}"))
    pdf.set_x(x0 + side + 8)
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(width - side - 8, 6, "Scan the code to write the message. Free; reply "
                   "STOP at any time to stop. No names are kept.")
    return bytes(pdf.output())

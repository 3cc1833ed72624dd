"""Documents the hub issues to parents: notices rendered to PDF (:mod:`.pdf`)."""

from hub.documents.pdf import (
    ADMINISTRATIVE_ACTS,
    KINDS,
    DocumentError,
    Notice,
    format_date,
    parse_date,
    pdf_text,
    read_fields,
    render_pdf,
    required_variables,
)

__all__ = [
    "ADMINISTRATIVE_ACTS",
    "KINDS",
    "DocumentError",
    "Notice",
    "format_date",
    "parse_date",
    "pdf_text",
    "read_fields",
    "render_pdf",
    "required_variables",
]

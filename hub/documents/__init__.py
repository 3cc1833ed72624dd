"""Documents the hub issues to parents: notices rendered to PDF (:mod:`.pdf`) and sealed as
``.edoc`` containers (:mod:`.edoc`)."""

from hub.documents.edoc import (
    EDOC_MEDIA_TYPE,
    EdocError,
    Opened,
    SealKey,
    generate_seal,
    open_edoc,
    seal,
)
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
    "EDOC_MEDIA_TYPE",
    "KINDS",
    "DocumentError",
    "EdocError",
    "Notice",
    "Opened",
    "SealKey",
    "format_date",
    "generate_seal",
    "open_edoc",
    "parse_date",
    "pdf_text",
    "read_fields",
    "render_pdf",
    "required_variables",
    "seal",
]

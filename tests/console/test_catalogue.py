"""Every message of the console's pages has its French translation, and the catalogue served
(fr.po) is the one `app/console/locales/make_fr.py` writes."""

from __future__ import annotations

import importlib.util

from app.console import i18n
from app.console.i18n import Speech

spec = importlib.util.spec_from_file_location("make_fr", i18n._LOCALES / "make_fr.py")
make_fr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_fr)


def test_every_extracted_message_has_a_french_translation() -> None:
    extracted = make_fr.extracted()
    assert "Tell the affected users now" in extracted  # the extraction sees the templates
    assert "Wrong email or password." in extracted  # and the code
    assert sorted(extracted - set(make_fr.FR)) == []


def test_the_catalogue_served_is_the_one_written() -> None:
    catalogue = i18n._catalogue("fr")
    assert catalogue == {k.strip(): v for k, v in make_fr.FR.items()}
    french = Speech("fr")
    assert french.gettext("Activate") == "Activer"
    assert french.gettext("not a message") == "not a message"
    assert Speech("en").gettext("Activate") == "Activate"

"""The phone page's languages: which one a request gets, and every string the page shows.

The page's JavaScript gets its strings from the server-rendered page, so this catalogue is the only one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "pd_lang"
# The name of each language, written in that language, for the switch that offers it.
NAMES = {"en": "English", "fr": "Français"}

PluralForm = Literal["one", "other"]
Text = str | dict[PluralForm, str]

CATALOGUE: dict[str, dict[str, Text]] = {
    "en": {
        "language": "Language",
        "upload_title": "Send photos",
        "intro": "Take a photo or choose some from your phone.",
        "intro_nojs": "Choose your photos, then press Send.",
        "photos_left": "photos left",
        "n_of_max": "{n} of {max}",
        "time_left": "time left",
        "valid_until": "Link valid until {when}",
        "accepted": "Accepted: {types}",
        "max_dimension": "Large photos are reduced to {px} px.",
        "take_photo": "Take a photo",
        "pick_photos": "Choose from gallery",
        "send": "Send",
        "unit_day": "d",
        "unit_hour": "h",
        "unit_minute": "min",
        "st_queued": "Waiting",
        "st_uploading": "Sending…",
        "st_done": "Sent",
        "st_retrying": "Connection problem: trying again in {s} s",
        "st_offline": "Offline: it will be sent when the connection is back",
        "st_failed": "Not sent",
        "retry": "Retry",
        "trimmed": {
            "one": "Room for {n} more: {dropped} photo was left out.",
            "other": "Room for {n} more: {dropped} photos were left out.",
        },
        "offline": "You are offline. Your photos wait here and are sent when the connection is back.",
        "expired_now": "This link has just expired.",
        "error_status": "Not sent (error {status}).",
        "reason_UNSUPPORTED_MEDIA_TYPE": "This file type is not accepted here.",
        "reason_FILE_TOO_LARGE": "This file is too large.",
        "reason_SESSION_FULL": "This link already has all the photos it asked for.",
        "reason_SESSION_EXPIRED": "This link has expired.",
        "reason_SESSION_CLOSED": "This upload is complete and takes no more photos.",
        "reason_VALIDATION_ERROR": "This file could not be used.",
        "reason_INVALID_PASSWORD": "That password is not right.",
        "reason_RATE_LIMIT": "Too many tries. Wait a minute and try again.",
        "reason_IMAGE_DIMENSION_TOO_LARGE": "This photo is larger than this link allows.",
        "reason_NOT_FOUND": "This upload link does not exist.",
        "reason_unknown": "This photo could not be sent.",
        "remove": "Remove",
        "remove_label": "Remove {name}",
        "finish": "I’m done",
        "summary": {
            "one": "{n} photo received, you can close this page.",
            "other": "{n} photos received, you can close this page.",
        },
        "overall": "{n} of {total} sent",
        "progress_bytes": "{sent} of {total} · {percent} %",
        "unit_kb": "kB",
        "unit_mb": "MB",
        "completed_now": "This upload has been closed: no more photos are taken.",
        "password_title": "Password needed",
        "password_heading": "This upload link needs a password",
        "password_label": "Password",
        "continue": "Continue",
        "not_found_heading": "Link not found",
        "not_found_text": "This upload link does not exist. Check that you scanned the right code.",
        "expired_heading": "This link has expired",
        "expired_text": "Ask whoever sent it for a new one.",
        "full_heading": "All photos received",
        "full_text": "This link already has every photo it asked for. Thank you!",
        "completed_heading": "Thank you",
        "completed_text": "This upload is complete and takes no more photos.",
        "received_heading": "Thank you",
        "received": {"one": "{n} photo received.", "other": "{n} photos received."},
        "send_more": "Send more photos",
    },
    "fr": {
        "language": "Langue",
        "upload_title": "Envoyer des photos",
        "intro": "Prenez une photo ou choisissez-en dans votre téléphone.",
        "intro_nojs": "Choisissez vos photos, puis appuyez sur Envoyer.",
        "photos_left": "photos restantes",
        "n_of_max": "{n} sur {max}",
        "time_left": "temps restant",
        "valid_until": "Lien valable jusqu’au {when}",
        "accepted": "Formats acceptés : {types}",
        "max_dimension": "Les grandes photos sont réduites à {px} px.",
        "take_photo": "Prendre une photo",
        "pick_photos": "Choisir dans la galerie",
        "send": "Envoyer",
        "unit_day": "j",
        "unit_hour": "h",
        "unit_minute": "min",
        "st_queued": "En attente",
        "st_uploading": "Envoi…",
        "st_done": "Envoyée",
        "st_retrying": "Problème de connexion : nouvel essai dans {s} s",
        "st_offline": "Hors ligne : elle partira au retour de la connexion",
        "st_failed": "Non envoyée",
        "retry": "Réessayer",
        "trimmed": {
            "one": "Place pour {n} de plus : {dropped} photo n’a pas été ajoutée.",
            "other": "Place pour {n} de plus : {dropped} photos n’ont pas été ajoutées.",
        },
        "offline": "Vous êtes hors ligne. Vos photos attendent ici et partiront au retour de la connexion.",
        "expired_now": "Ce lien vient d’expirer.",
        "error_status": "Non envoyée (erreur {status}).",
        "reason_UNSUPPORTED_MEDIA_TYPE": "Ce type de fichier n’est pas accepté ici.",
        "reason_FILE_TOO_LARGE": "Ce fichier est trop volumineux.",
        "reason_SESSION_FULL": "Ce lien a déjà reçu toutes les photos demandées.",
        "reason_SESSION_EXPIRED": "Ce lien a expiré.",
        "reason_SESSION_CLOSED": "Cet envoi est terminé et n’accepte plus de photos.",
        "reason_VALIDATION_ERROR": "Ce fichier n’a pas pu être utilisé.",
        "reason_INVALID_PASSWORD": "Ce mot de passe n’est pas le bon.",
        "reason_RATE_LIMIT": "Trop d’essais. Attendez une minute puis réessayez.",
        "reason_IMAGE_DIMENSION_TOO_LARGE": "Cette photo est plus grande que ce que ce lien accepte.",
        "reason_NOT_FOUND": "Ce lien d’envoi n’existe pas.",
        "reason_unknown": "Cette photo n’a pas pu être envoyée.",
        "remove": "Retirer",
        "remove_label": "Retirer {name}",
        "finish": "J’ai terminé",
        "summary": {
            "one": "{n} photo reçue, vous pouvez fermer cette page.",
            "other": "{n} photos reçues, vous pouvez fermer cette page.",
        },
        "overall": "{n} sur {total} envoyées",
        "progress_bytes": "{sent} sur {total} · {percent} %",
        "unit_kb": "ko",
        "unit_mb": "Mo",
        "completed_now": "Cet envoi vient d’être clos : il n’accepte plus de photos.",
        "password_title": "Mot de passe requis",
        "password_heading": "Ce lien d’envoi demande un mot de passe",
        "password_label": "Mot de passe",
        "continue": "Continuer",
        "not_found_heading": "Lien introuvable",
        "not_found_text": "Ce lien d’envoi n’existe pas. Vérifiez que vous avez scanné le bon code.",
        "expired_heading": "Ce lien a expiré",
        "expired_text": "Demandez-en un nouveau à la personne qui vous l’a envoyé.",
        "full_heading": "Toutes les photos sont reçues",
        "full_text": "Ce lien a déjà reçu toutes les photos demandées. Merci !",
        "completed_heading": "Merci",
        "completed_text": "Cet envoi est terminé et n’accepte plus de photos.",
        "received_heading": "Merci",
        "received": {"one": "{n} photo reçue.", "other": "{n} photos reçues."},
        "send_more": "Envoyer d’autres photos",
    },
}

# What phone.js shows; handed to it through a data attribute of the page.
SCRIPT_KEYS = (
    "n_of_max",
    "unit_day",
    "unit_hour",
    "unit_minute",
    "st_queued",
    "st_uploading",
    "st_done",
    "st_retrying",
    "st_offline",
    "st_failed",
    "retry",
    "trimmed",
    "offline",
    "expired_now",
    "error_status",
    "remove",
    "remove_label",
    "summary",
    "overall",
    "progress_bytes",
    "unit_kb",
    "unit_mb",
    "completed_now",
    *(key for key in CATALOGUE["en"] if key.startswith("reason_")),
)


def accepted_languages(header: str | None) -> list[str]:
    """The primary language tags of an Accept-Language header, most wanted first (q=0 ones dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((header or "").split(",")):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary and 0 < weight <= 1:
            ranked.append((-weight, position, primary))
    return [primary for _, _, primary in sorted(ranked)]


def negotiate(*, query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """An explicit choice (``?lang=``, then the ``pd_lang`` cookie) wins over the browser's preferences."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    for primary in accepted_languages(accept_language):
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            break
    return DEFAULT_LANGUAGE


def plural_form(lang: str, count: int) -> PluralForm:
    """CLDR's rule for our two languages: French treats 0 and 1 as singular, English only 1."""
    if lang == "fr":
        return "one" if count in (0, 1) else "other"
    return "one" if count == 1 else "other"


@dataclass(frozen=True)
class Translator:
    """The strings of one language; templates call it as ``t(key, **values)``."""

    lang: str

    def __call__(self, key: str, /, count: int | None = None, **values: object) -> str:
        text = CATALOGUE[self.lang][key]
        if isinstance(text, dict):
            number = 0 if count is None else count
            text = text[plural_form(self.lang, number)]
            values.setdefault("n", number)
        return text.format(**values) if values else text

    def reason(self, code: str) -> str:
        """Why the server refused something, in this language only: never the server's English words."""
        text = CATALOGUE[self.lang].get(f"reason_{code}")
        return text if isinstance(text, str) else self("reason_unknown")

    def script_strings(self) -> dict[str, Text]:
        return {key: CATALOGUE[self.lang][key] for key in SCRIPT_KEYS}

    def duration(self, seconds: int) -> str:
        """Time left, as phone.js also writes it while it ticks."""
        seconds = max(0, seconds)
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        if days:
            return f"{days} {self('unit_day')} {hours} {self('unit_hour')}"
        if hours:
            return f"{hours} {self('unit_hour')} {minutes:02d} {self('unit_minute')}"
        return f"{minutes}:{secs:02d}"

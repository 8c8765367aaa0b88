"""Writes fr.po: the French catalogue of the console (pages and mails).

Run from the repository's root after changing a message: `python app/console/locales/make_fr.py`
(it checks that every message `pybabel extract` finds has a translation here).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).parent

FR = {
    # Sign-in
    "Sign in": "Connexion",
    "Email": "Adresse e-mail",
    "Password": "Mot de passe",
    "Wrong email or password.": "Adresse e-mail ou mot de passe incorrect.",
    "Too many failed sign-ins. Try again in %(seconds)s seconds.":
        "Trop d'échecs de connexion. Réessayez dans %(seconds)s secondes.",
    "Too many sign-ins at once. Try again in a moment.":
        "Trop de connexions simultanées. Réessayez dans un instant.",
    # Layout
    "Skip to content": "Aller au contenu",
    "Main": "Principal",
    "Language": "Langue",
    "Change": "Changer",
    "Sign out": "Déconnexion",
    "Signed in as %(email)s · plan %(plan)s": "Connecté en tant que %(email)s · offre %(plan)s",
    "Dates are shown in %(zone)s.": "Les dates sont affichées en %(zone)s.",
    "Back to the console": "Retour à la console",
    "Pages": "Pages",
    "Older": "Plus anciens",
    "Newer": "Plus récents",
    "Actions": "Actions",
    "Filter": "Filtrer",
    "All": "Tous",
    "Done.": "C'est fait.",
    # Errors
    "Not allowed": "Non autorisé",
    "Not found": "Introuvable",
    "Check what you entered": "Vérifiez votre saisie",
    "Unavailable": "Indisponible",
    "Tessera cannot reach its database just now. Nothing was changed; try again in a moment.":
        "Tessera ne peut pas joindre sa base de données pour le moment. Rien n'a été modifié ; "
        "réessayez dans un instant.",
    "Something changed meanwhile, so nothing was done. Reload the page and try again.":
        "Quelque chose a changé entre-temps, rien n'a donc été fait. Rechargez la page et "
        "réessayez.",
    "The request ended before it was read whole. Try again.":
        "La requête s'est interrompue avant d'être lue en entier. Réessayez.",
    "Another change came at the same moment, so nothing was done. Try again.":
        "Une autre modification est arrivée au même moment, rien n'a donc été fait. Réessayez.",
    "A value you entered cannot be stored. Check what you entered and try again.":
        "Une valeur saisie ne peut pas être enregistrée. Vérifiez votre saisie et réessayez.",
    "Something went wrong on our side. Try again; if it goes on, tell the people who run "
    "Tessera.":
        "Une erreur est survenue de notre côté. Réessayez ; si elle persiste, prévenez les "
        "personnes qui exploitent Tessera.",
    "Something went wrong": "Une erreur est survenue",
    "There is no such page.": "Cette page n'existe pas.",
    "This page cannot do that.": "Cette page ne permet pas cette action.",
    "The request is not valid.": "La requête n'est pas valide.",
    "The form has expired or was not sent from this page. Reload the page and try again.":
        "Le formulaire a expiré ou n'a pas été envoyé depuis cette page. Rechargez la page et "
        "réessayez.",
    "only a system admin of this plan may open this page":
        "seul un administrateur système de cette offre peut ouvrir cette page",
    "no such token": "jeton introuvable",
    "no such connected app": "application connectée introuvable",
    "no such integration in this plan": "intégration introuvable dans cette offre",
    "enter a whole number and a unit": "saisissez un nombre entier et une unité",
    "enter whole numbers": "saisissez des nombres entiers",
    "Confirm the tokens this change expires before activating it.":
        "Confirmez les jetons que ce changement fait expirer avant de l'activer.",
    # Personal settings
    "Personal settings": "Paramètres personnels",
    "API access": "Accès API",
    "The token was revoked.": "Le jeton a été révoqué.",
    "Your new token": "Votre nouveau jeton",
    "It replaces the token ending in %(hint)s, which no longer works.":
        "Il remplace le jeton se terminant par %(hint)s, qui ne fonctionne plus.",
    "Copy it now: it is shown only once.": "Copiez-le maintenant : il n'est affiché qu'une fois.",
    "New token": "Nouveau jeton",
    "Copy": "Copier",
    "Generate a token": "Générer un jeton",
    "Name": "Nom",
    "e.g. reporting script": "p. ex. script de rapports",
    "Generate": "Générer",
    "Your tokens": "Vos jetons",
    "You have no personal token yet.": "Vous n'avez pas encore de jeton personnel.",
    "No token on this page.": "Aucun jeton sur cette page.",
    "Ends in": "Se termine par",
    "Created": "Créé le",
    "Expires": "Expire le",
    "Status": "Statut",
    "(no name)": "(sans nom)",
    "Never (until revoked)": "Jamais (jusqu'à révocation)",
    "Regenerate %(name)s": "Régénérer %(name)s",
    "Regenerate": "Régénérer",
    "Revoke %(name)s": "Révoquer %(name)s",
    "Revoke": "Révoquer",
    "active": "actif",
    "expired": "expiré",
    "revoked": "révoqué",
    "rotated": "renouvelé",
    "integration refused": "refusé (intégration)",
    "Connected apps": "Applications connectées",
    "The app was disconnected: its tokens no longer work.":
        "L'application a été déconnectée : ses jetons ne fonctionnent plus.",
    "You have not connected any app.": "Vous n'avez connecté aucune application.",
    "Authorized %(when)s · last used %(last)s":
        "Autorisée le %(when)s · dernière utilisation le %(last)s",
    "Disconnect %(name)s": "Déconnecter %(name)s",
    "Disconnect": "Déconnecter",
    # Admin Center
    "Admin Center": "Centre d'administration",
    "Security & Control": "Sécurité et contrôle",
    "API access tokens": "Jetons d'accès API",
    "The expiration period is active.": "La période d'expiration est active.",
    "Tokens no longer expire by policy.": "Les jetons n'expirent plus par règle.",
    "Notices queued: %(n)s.": "Avis mis en file d'envoi : %(n)s.",
    "Token expiration": "Expiration des jetons",
    "Tokens expire %(count)s %(unit)s after they were generated.":
        "Les jetons expirent %(count)s %(unit)s après leur génération.",
    "Since %(when)s.": "Depuis le %(when)s.",
    "Turn off expiration": "Désactiver l'expiration",
    "Tell the affected users now": "Prévenir maintenant les utilisateurs concernés",
    "Off: tokens live until they are revoked.":
        "Désactivée : les jetons restent valides jusqu'à leur révocation.",
    "Set the expiration period": "Définir la période d'expiration",
    "Expire tokens after": "Faire expirer les jetons après",
    "Unit": "Unité",
    "minutes": "minutes",
    "hours": "heures",
    "days": "jours",
    "months": "mois",
    "years": "ans",
    "Preview": "Aperçu",
    "What %(count)s %(unit)s would do": "Effet d'une période de %(count)s %(unit)s",
    "Expire now, for good": "Expirent tout de suite, définitivement",
    "Expire within 7 days": "Expirent sous 7 jours",
    "Expire later": "Expirent plus tard",
    "Tokens this change expires within 7 days":
        "Jetons que ce changement fait expirer sous 7 jours",
    "Owner": "Titulaire",
    "Token": "Jeton",
    "Dies": "Expire le",
    "(integration)": "(intégration)",
    "Only the first tokens are listed.": "Seuls les premiers jetons sont listés.",
    "Expiry is final: a token the period expires stays dead even if you lengthen or turn off "
    "the period later.":
        "L'expiration est définitive : un jeton expiré le reste même si vous allongez ou "
        "désactivez la période plus tard.",
    "I understand that %(n)s tokens will stop working within 7 days, %(now)s of them at once.":
        "Je comprends que %(n)s jetons cesseront de fonctionner sous 7 jours, dont %(now)s tout "
        "de suite.",
    "This includes your own tokens: %(names)s.": "Cela inclut vos propres jetons : %(names)s.",
    "Some of them stop working at once, including the one you may be using.":
        "Certains cessent de fonctionner tout de suite, peut-être celui que vous utilisez.",
    "Activate": "Activer",
    "Tokens": "Jetons",
    "Kind": "Type",
    "User": "Utilisateur",
    "Expiring within (days)": "Expirant sous (jours)",
    "No token matches.": "Aucun jeton ne correspond.",
    "personal": "personnel",
    "integration": "intégration",
    "access": "accès",
    "refresh": "renouvellement",
    "Integrations": "Intégrations",
    "No integration is installed in this plan.":
        "Aucune intégration n'est installée dans cette offre.",
    "Needs attention": "À traiter",
    "Review": "Examen",
    "Deadline": "Échéance",
    "Exception until": "Exception jusqu'au",
    "State": "État",
    "Decision in force": "Décision en vigueur",
    "Why it is not third-party": "Pourquoi elle n'est pas tierce",
    "custom": "personnalisée",
    "third party": "tierce",
    "approved": "approuvée",
    "not reviewed": "non examinée",
    "deactivated": "désactivée",
    "Deactivate": "Désactiver",
    "Reactivate": "Réactiver",
    "Confirm keep": "Confirmer le maintien",
    "Report misjudgement": "Signaler une erreur d'appréciation",
    "Directory": "Annuaire",
    "Search": "Rechercher",
    "No approved integration matches.": "Aucune intégration approuvée ne correspond.",
    "Data access: %(access)s": "Accès aux données : %(access)s",
    "limited": "limité",
    "Install": "Installer",
    "Install %(name)s": "Installer %(name)s",
    "Install %(name)s?": "Installer %(name)s ?",
    "%(name)s will be able to, for every member of the plan who connects it:":
        "%(name)s pourra, pour chaque membre de l'offre qui la connecte :",
    "It is already installed in this plan.": "Elle est déjà installée dans cette offre.",
    "Deny": "Refuser",
    "Allow": "Autoriser",
    "no such integration in the directory": "intégration introuvable dans l'annuaire",
    "extended": "étendu",
    "Audit log": "Journal d'audit",
    "Action starts with": "L'action commence par",
    "No event on this page.": "Aucun événement sur cette page.",
    "When": "Quand",
    "Who": "Qui",
    "Action": "Action",
    "Target": "Cible",
    "Why it must keep working": "Pourquoi elle doit continuer de fonctionner",
    "Your request was sent to the platform; you will be told of its answer.":
        "Votre demande a été transmise à la plateforme ; vous serez informé de sa réponse.",
    "say why it must keep working": "dites pourquoi elle doit continuer de fonctionner",
    "say why the platform misjudged it": "dites pourquoi la plateforme s'est trompée",
    "Request exception": "Demander une exception",
    "Scrollable table": "Tableau défilant",
    "Saved.": "Enregistré.",
    "Its access tokens must be DPoP-bound": "Ses jetons d'accès doivent être liés par DPoP",
    "Save the DPoP requirement of %(name)s": "Enregistrer l'exigence DPoP de %(name)s",
    "Save": "Enregistrer",
    "Proof of possession (DPoP)": "Preuve de possession (DPoP)",
    "Bind the access tokens of the plan's custom integrations to a key each integration holds: "
    "a stolen token is useless without it.":
        "Lier les jetons d'accès des intégrations personnalisées de l'offre à une clé que "
        "chacune détient : un jeton volé est inutilisable sans elle.",
    "Require DPoP for custom integrations": "Exiger DPoP pour les intégrations personnalisées",
    # Operator console
    "Operator sign-in": "Connexion opérateur",
    "Operator token": "Jeton d'opérateur",
    "That is not an operator token.": "Ce n'est pas un jeton d'opérateur.",
    "Platform operator %(email)s": "Opérateur de la plateforme %(email)s",
    "Review queue": "File d'examen",
    "Requests and reports": "Demandes et signalements",
    "No integration to review.": "Aucune intégration à examiner.",
    "Data access": "Accès aux données",
    "Missing steps": "Étapes manquantes",
    "Review steps done": "Étapes d'examen réalisées",
    "business verification": "vérification de l'entreprise",
    "terms accepted": "conditions acceptées",
    "review": "examen",
    "penetration test": "test d'intrusion",
    "security questionnaire": "questionnaire de sécurité",
    "Deadline (UTC)": "Échéance (UTC)",
    "Note": "Note",
    "Save review": "Enregistrer l'examen",
    "Save the review of %(name)s": "Enregistrer l'examen de %(name)s",
    "Exception until (UTC)": "Exception jusqu'au (UTC)",
    "Set exception": "Définir l'exception",
    "Set the exception of %(name)s": "Définir l'exception de %(name)s",
    "Exception requests": "Demandes d'exception",
    "No request waits for an answer.": "Aucune demande n'attend de réponse.",
    "Asked by %(who)s on %(when)s for plan %(plan)s":
        "Demandée par %(who)s le %(when)s pour l'offre %(plan)s",
    "Grant": "Accorder",
    "Why not": "Motif du refus",
    "Refuse": "Refuser",
    "Misjudgement reports": "Signalements d'erreur d'appréciation",
    "No report.": "Aucun signalement.",
    "Integration": "Intégration",
    "Message": "Message",
    "in review": "en cours d'examen",
    "not approved": "non approuvée",
    # Reminders to plan admins (app/notifications/reminders.py)
    "%(name)s needs your attention before %(deadline)s":
        "%(name)s demande votre attention avant le %(deadline)s",
    "The deadline for %(name)s moved to %(deadline)s":
        "L'échéance de %(name)s a été déplacée au %(deadline)s",
    "%(days)s days left to act on %(name)s": "Plus que %(days)s jours pour agir sur %(name)s",
    "%(name)s was deactivated in %(plan)s": "%(name)s a été désactivée dans %(plan)s",
    "An exception was granted for %(name)s until %(until)s":
        "Une exception a été accordée à %(name)s jusqu'au %(until)s",
    "The exception for %(name)s was refused": "L'exception demandée pour %(name)s a été refusée",
    "%(name)s, installed in %(plan)s, is not approved by the platform's review. It keeps "
    "working until %(deadline)s; after that its calls are refused unless its review is "
    "approved or an exception is granted.":
        "%(name)s, installée dans %(plan)s, n'est pas approuvée par l'examen de la plateforme. "
        "Elle fonctionne jusqu'au %(deadline)s ; ensuite ses appels sont refusés, sauf si son "
        "examen est approuvé ou si une exception est accordée.",
    "The review deadline of %(name)s, installed in %(plan)s, is now %(deadline)s.":
        "L'échéance d'examen de %(name)s, installée dans %(plan)s, est désormais le "
        "%(deadline)s.",
    "%(name)s, installed in %(plan)s, stops working on %(deadline)s unless its review is "
    "approved or an exception is granted.":
        "%(name)s, installée dans %(plan)s, cessera de fonctionner le %(deadline)s, sauf si son "
        "examen est approuvé ou si une exception est accordée.",
    "%(name)s was deactivated in %(plan)s on the date the platform set: %(why)s":
        "%(name)s a été désactivée dans %(plan)s à la date fixée par la plateforme : %(why)s",
    "%(name)s keeps working in %(plan)s until %(until)s under an exception.":
        "%(name)s continue de fonctionner dans %(plan)s jusqu'au %(until)s grâce à une "
        "exception.",
    "The platform refused the exception requested for %(name)s in %(plan)s. %(note)s":
        "La plateforme a refusé l'exception demandée pour %(name)s dans %(plan)s. %(note)s",
    "Open the Admin Center's integrations page: %(url)s":
        "Ouvrez la page des intégrations du Centre d'administration : %(url)s",
    # Expiry notices to token owners (app/notifications/messages.py)
    "minute": "minute",
    "hour": "heure",
    "day": "jour",
    "month": "mois",
    "year": "an",
    "(unnamed)": "(sans nom)",
    'integration token %(name)s of the integration "%(integration)s", ending in %(hint)s':
        "jeton d'intégration %(name)s de l'intégration « %(integration)s », se terminant par "
        "%(hint)s",
    "integration token %(name)s, ending in %(hint)s":
        "jeton d'intégration %(name)s, se terminant par %(hint)s",
    "personal API token %(name)s, ending in %(hint)s":
        "jeton d'API personnel %(name)s, se terminant par %(hint)s",
    "the plan's expiration period was set to %(period)s on %(set_at)s; counted from the "
    "token's generation on %(issued_at)s, that period had already run out":
        "la période d'expiration de l'offre a été fixée à %(period)s le %(set_at)s ; comptée "
        "depuis la génération du jeton le %(issued_at)s, cette période était déjà écoulée",
    "the plan's expiration period of %(period)s counted from the token's generation on "
    "%(issued_at)s":
        "la période d'expiration de l'offre, %(period)s, comptée depuis la génération du jeton "
        "le %(issued_at)s",
    "the token's own lifetime, fixed when it was generated on %(issued_at)s":
        "la durée de vie propre du jeton, fixée à sa génération le %(issued_at)s",
    "A system admin of the plan can generate a new token for the integration":
        "Un administrateur système de l'offre peut générer un nouveau jeton pour l'intégration",
    "Generate a new personal token": "Générez un nouveau jeton personnel",
    "then put it wherever the old one is used. An expired token cannot be extended.":
        "puis mettez-le partout où l'ancien est utilisé. Un jeton expiré ne peut pas être "
        "prolongé.",
    "Your Tessera token ending in %(hint)s expires at %(when)s":
        "Votre jeton Tessera se terminant par %(hint)s expire le %(when)s",
    "Your %(what)s, expires at %(when)s (UTC).": "Votre %(what)s expire le %(when)s (UTC).",
    "From then on, every request made with it will be refused.":
        "Dès lors, toute requête faite avec lui sera refusée.",
    "Your Tessera token ending in %(hint)s has expired":
        "Votre jeton Tessera se terminant par %(hint)s a expiré",
    "Your %(what)s, expired at %(when)s (UTC).": "Votre %(what)s a expiré le %(when)s (UTC).",
    "Your %(what)s, expired at %(when)s (UTC) because the plan's period was set to %(period)s "
    "on %(set_at)s.":
        "Votre %(what)s a expiré le %(when)s (UTC) parce que la période de l'offre a été fixée "
        "à %(period)s le %(set_at)s.",
    "Every request made with it is now refused. It stays expired: a later change of the "
    "plan's period does not bring it back.":
        "Toute requête faite avec lui est désormais refusée. Il reste expiré : un changement "
        "ultérieur de la période de l'offre ne le rétablit pas.",
    "Hello %(name)s,": "Bonjour %(name)s,",
    "Hello,": "Bonjour,",
    "generated this integration token": "avez généré ce jeton d'intégration",
    "own this token": "êtes titulaire de ce jeton",
    "Why: %(reason)s.": "Pourquoi : %(reason)s.",
    "Token id: %(token)s\nPlan id: %(plan)s": "Jeton : %(token)s\nOffre : %(plan)s",
    "Tessera. You receive this because you %(why)s.":
        "Tessera. Vous recevez ce message parce que vous %(why)s.",
    # Scopes (app/oauth2/scopes.py)
    "See your name, email address and role": "Voir votre nom, votre adresse e-mail et votre rôle",
    "See your personal API tokens and when they expire":
        "Voir vos jetons d'API personnels et leur date d'expiration",
    "Create and revoke your personal API tokens": "Créer et révoquer vos jetons d'API personnels",
    "Read your plan's data through the platform API":
        "Lire les données de votre offre via l'API de la plateforme",
    "Create, change and delete your plan's data through the platform API":
        "Créer, modifier et supprimer les données de votre offre via l'API de la plateforme",
    "See your plan's token policy, tokens, integrations and audit log (admins only)":
        "Voir la règle d'expiration, les jetons, les intégrations et le journal d'audit de votre "
        "offre (administrateurs)",
    "Change your plan's token policy, users, tokens and integrations (admins only)":
        "Modifier la règle d'expiration, les utilisateurs, les jetons et les intégrations de "
        "votre offre (administrateurs)",
}


def extracted() -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        pot = Path(tmp) / "console.pot"
        command = [sys.executable, "-m", "babel.messages.frontend", "extract", "-k", "N_",
                   "-F", str(HERE / "babel.cfg"), "-o", str(pot), "."]
        subprocess.run(command, check=True, capture_output=True,  # noqa: S603 - fixed
                       cwd=HERE.parent.parent.parent)
        with pot.open("rb") as handle:
            return {str(m.id) for m in read_po(handle) if m.id}


def main() -> int:
    catalog = Catalog(locale="fr", project="Tessera", fuzzy=False)
    for source, text in FR.items():
        catalog.add(source.strip(), text)
    with (HERE / "fr.po").open("wb") as handle:
        write_po(handle, catalog, width=100, omit_header=False, sort_output=True)
    missing = extracted() - set(FR)
    for message in sorted(missing):
        print(f"no French for: {message!r}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

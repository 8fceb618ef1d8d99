"""The HTTP side-app: order JSON API, KaKaTong REST and SOAP, SMS hook, admin, metrics, health."""

"""Push notifications: device registry, delivery rules, the durable queue and its worker, providers
(FCM through firebase-admin; a logging provider without credentials). See docs/flows/push.md."""

import NotificationService
import ServiceKit

await ServiceMain.run(
    .notification,
    extraSettingsHelp: """
      WEBHOOK_MAX_ATTEMPTS           attempts per webhook delivery before it fails  [8]
      WEBHOOK_BACKOFF_BASE_MS        delay after the first failed attempt, doubling  [1000]
      WEBHOOK_BACKOFF_MAX_MS         longest delay between attempts  [600000]
      WEBHOOK_CONNECT_TIMEOUT_MS     connect timeout of a webhook request  [2000]
      WEBHOOK_TIMEOUT_MS             total timeout of a webhook request  [10000]
      WEBHOOK_BREAKER_FAILURES       consecutive failures that open a host's breaker  [5]
      WEBHOOK_BREAKER_OPEN_SECONDS   how long an open breaker waits before a probe  [30]
      WEBHOOK_CONCURRENCY            deliveries in flight per instance  [16]
      WEBHOOK_HOST_CONCURRENCY       of those, how many to one host  [4]
      WEBHOOK_POLL_INTERVAL_MS       how often an idle worker looks for due deliveries  [500]
      WEBHOOK_ALLOW_PRIVATE_TARGETS  true: accept loopback/private webhook URLs (local only)  [false]

    """
) { settings in
    try NotificationService.definition(settings: settings, notificationSettings: try NotificationSettings())
}

import NotificationService
import ServiceKit

await ServiceMain.run(.notification) { settings in try NotificationService.definition(settings: settings) }

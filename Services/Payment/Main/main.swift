import PaymentService
import ServiceKit

await ServiceMain.run(.payment) { settings in try PaymentService.definition(settings: settings) }

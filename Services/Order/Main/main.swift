import OrderService
import ServiceKit

await ServiceMain.run(
    .order,
    extraSettingsHelp: "  ORDER_PENDING_TIMEOUT_SECONDS  a pending order is cancelled after this  [30]\n"
) { settings in
    try OrderService.definition(settings: settings, orderSettings: try OrderSettings())
}

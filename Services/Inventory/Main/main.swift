import InventoryService
import ServiceKit

await ServiceMain.run(.inventory) { settings in try InventoryService.definition(settings: settings) }

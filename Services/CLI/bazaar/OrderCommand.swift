import ArgumentParser
import Contracts
import Foundation

struct OrderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order", abstract: "Place an order and follow it, or show an order's saga.",
        subcommands: [Place.self, Show.self])

    struct Place: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Place an order and, unless --no-follow, print each step of its saga as it happens.",
            discussion: "Example: bazaar order place --customer alice --item MUG-01:2 --item TEE-42:1")

        @Option(help: "The customer placing the order.")
        var customer: String

        @Option(name: .customLong("item"), help: "A line as SKU:QUANTITY; repeat for more lines.")
        var items: [String]

        @Option(help: "Makes a retried placement return the same order.")
        var idempotencyKey: String?

        @Flag(inversion: .prefixedNo, help: "Follow the order until it is confirmed or cancelled.")
        var follow = true

        @Option(help: "How long to follow before giving up, in seconds.")
        var timeout = 60

        @OptionGroup var output: OutputOptions

        func validate() throws {
            guard !items.isEmpty else { throw ValidationError("give at least one --item SKU:QUANTITY") }
            for item in items { _ = try Self.parse(item) }
        }

        static func parse(_ item: String) throws -> (sku: String, quantity: Int) {
            let parts = item.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let quantity = Int(parts[1]), quantity > 0 else {
                throw ValidationError("--item \(item): expected SKU:QUANTITY with a positive quantity, like MUG-01:2")
            }
            return (String(parts[0]), quantity)
        }

        struct Body: Encodable {
            struct Item: Encodable {
                var sku: String
                var quantity: Int
            }

            var customerId: String
            var items: [Item]
        }

        func run() async throws {
            let environment = BazaarEnvironment.load()
            let client = ServiceClient(environment: environment)
            let body = Body(
                customerId: customer,
                items: try items.map { let (sku, quantity) = try Self.parse($0); return Body.Item(sku: sku, quantity: quantity) })
            let response = try await client.send(
                "POST", .order, "/orders", json: body, headers: idempotencyKey.map { ["Idempotency-Key": $0] } ?? [:])
            guard response.status == 202 else {
                throw CLIError("the order service refused the order (\(response.status)): \(response.problem)")
            }
            var order = try response.decode(OrderView.self)
            if !output.json {
                print("placed order \(order.orderId) for \(order.customerId): total \(money(order.total)), \(order.status)")
            }
            if follow {
                order = try await Follower(environment: environment, client: client, printSteps: !output.json)
                    .follow(order, timeout: .seconds(timeout))
            }
            if output.json { print(try jsonText(order)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show an order and its saga across the four services, from what they recorded.")

        @Argument(help: "The order id.")
        var orderId: String

        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard let id = UUID(uuidString: orderId) else { throw ValidationError("\(orderId) is not an order id (a UUID)") }
            let environment = BazaarEnvironment.load()
            let client = ServiceClient(environment: environment)
            let response = try await client.send("GET", .order, "/orders/\(id.uuidString.lowercased())")
            guard response.status == 200 else { throw CLIError("no order \(orderId): \(response.problem)") }
            let order = try response.decode(OrderView.self)
            let timeline = try await SagaTimeline.load(orderId: id, environment: environment)
            if output.json {
                struct Shown: Encodable {
                    var order: OrderView
                    var timeline: SagaTimeline
                }
                print(try jsonText(Shown(order: order, timeline: timeline)))
            } else {
                print(summary(order))
                for item in order.items { print("  \(item.sku) × \(item.quantity) at \(money(item.unitPrice))") }
                print()
                print(timeline.rendered())
            }
        }
    }
}

/// Watches an order until it settles, printing each new event of its saga as it appears.
struct Follower {
    let environment: BazaarEnvironment
    let client: ServiceClient
    let printSteps: Bool

    func follow(_ placed: OrderView, timeout: Duration) async throws -> OrderView {
        guard let id = UUID(uuidString: placed.orderId) else { return placed }
        var seen = Set<UUID>()
        let deadline = ContinuousClock.now + timeout
        while true {
            // The order first, then its timeline: once the order has settled, the timeline read
            // after it holds every event that led there.
            let response = try await client.send("GET", .order, "/orders/\(placed.orderId)")
            guard response.status == 200 else {
                throw CLIError("the order service answered \(response.status) for order \(placed.orderId): \(response.problem)")
            }
            let order = try response.decode(OrderView.self)
            let timeline = try await SagaTimeline.load(orderId: id, environment: environment)
            for event in timeline.events where seen.insert(event.eventId).inserted && printSteps {
                let start = timeline.events.first?.emittedAt ?? event.emittedAt
                let at = Int((event.emittedAt.timeIntervalSince(start) * 1000).rounded())
                let time = "+\(at) ms".padding(toLength: 10, withPad: " ", startingAt: 0)
                print("  \(time)\(event.source.padding(toLength: 14, withPad: " ", startingAt: 0))\(event.type)")
                fflush(nil)  // each step as it happens, even when the output is a pipe
            }
            if order.status != "pending" {
                if printSteps { print(summary(order)) }
                return order
            }
            guard ContinuousClock.now < deadline else {
                throw CLIError("order \(placed.orderId) still pending after \(timeout); see `bazaar order show \(placed.orderId)`")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

func summary(_ order: OrderView) -> String {
    let state = order.reason.map { "\(order.status) (\($0))" } ?? order.status
    return "order \(order.orderId) · \(order.customerId) · \(state) · total \(money(order.total))"
}

func jsonText(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

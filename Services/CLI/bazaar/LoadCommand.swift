import ArgumentParser
import Contracts
import Foundation
import Histogram
import Logging
import Postgres

/// `bazaar load`: an open-loop load test. Orders arrive at a fixed rate whatever the system's
/// response times (a closed loop would wait for slow answers and so hide them). The latency of
/// each order runs from the moment it was *scheduled* — so time spent queueing before the
/// server saw it counts too (no coordinated omission) — to the order service's own timestamp of
/// its final state. (Client and service clocks must agree: the same host, or synchronised.)
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Place orders at a fixed rate and report throughput, outcomes and latency percentiles.",
        discussion: """
            Creates its own products (LOAD-PLENTY with ample stock, LOAD-NONE with none) and customers \
            (load-1… with ample balance, load-broke with none), so the mix decides the outcomes:
              happy         confirmed orders
              out-of-stock  cancelled as out_of_stock
              declined      cancelled as payment_declined
            Example: bazaar load --rate 50 --duration 60s --mix happy=80,out-of-stock=10,declined=10
            """)

    @Option(help: "Orders per second.")
    var rate: Double = 20

    @Option(help: "How long to place orders: 60s, 2m, or seconds.", transform: LoadCommand.parseDuration)
    var duration: Duration = .seconds(30)

    @Option(help: "How many happy customers to spread orders over.")
    var customers = 20

    @Option(help: "Weights of the outcomes, as happy=N,out-of-stock=N,declined=N.", transform: Mix.parse)
    var mix = Mix(happy: 100, outOfStock: 0, declined: 0)

    @Option(help: "Seconds to wait after the last order for every order to settle.")
    var settleTimeout = 60

    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard rate > 0, rate <= 5_000 else { throw ValidationError("--rate must be between 0 and 5000 orders per second") }
        guard customers >= 1 else { throw ValidationError("--customers must be at least 1") }
    }

    func run() async throws {
        let environment = BazaarEnvironment.load()
        let client = ServiceClient(environment: environment)
        let database = try await connectToDatabase(environment)
        defer { Task { await database.close() } }
        try await prepareFixtures(client, database: database, environment: environment)

        let total = max(1, Int((rate * duration.seconds).rounded()))
        if !output.json {
            print("load: \(rate) orders/s for \(duration) (\(mix)), \(total) orders")
        }
        let run = LoadRun(total: total)
        let kinds = mix.kinds(count: total)
        let started = ContinuousClock.now
        let progress = Task { await reportProgress(run, started: started, database: database, environment: environment) }
        let startedAt = Date()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<total {
                let offset = Double(index) / rate
                try? await Task.sleep(until: started + .seconds(offset))
                let due = startedAt.addingTimeInterval(offset)
                group.addTask { await place(index, kind: kinds[index], due: due, client: client, run: run) }
            }
        }
        let placingTime = ContinuousClock.now - started
        let settled = try await waitUntilSettled(run, database: database, environment: environment)
        progress.cancel()
        let report = try await LoadReport.build(
            run: run, orders: settled, placingTime: placingTime, elapsed: ContinuousClock.now - started,
            rate: rate, mix: mix)
        print(output.json ? try jsonText(report) : report.rendered())
        if report.failed > 0 || report.settled < report.placed {
            throw CLIError("\(report.failed) orders could not be placed and \(report.placed - report.settled) did not settle within \(settleTimeout) s")
        }
    }

    private func connectToDatabase(_ environment: BazaarEnvironment) async throws -> PostgresConnection {
        let configuration = try PostgresConfiguration(url: environment.databaseURL, applicationName: "bazaar-load")
        do {
            return try await PostgresConnection.connect(configuration: configuration, logger: cliLogger)
        } catch {
            throw CLIError("database not reachable at \(configuration) — is the stack running? try `bazaar stack up`")
        }
    }

    /// Products and customers whose outcomes are known in advance; created or reset each run.
    private func prepareFixtures(_ client: ServiceClient, database: PostgresConnection, environment: BazaarEnvironment) async throws {
        struct Product: Encodable { var name: String; var price: Int; var stock: Int }
        struct Account: Encodable { var balance: Int }
        for (sku, stock) in [("LOAD-PLENTY", 1_000_000_000), ("LOAD-NONE", 0)] {
            let response = try await client.send("PUT", .inventory, "/products/\(sku)", json: Product(name: sku, price: 100, stock: stock))
            guard response.status == 200 else { throw CLIError("could not create product \(sku): \(response.problem)") }
        }
        for (customer, balance) in (1...customers).map({ ("load-\($0)", 1_000_000_000_000) }) + [("load-broke", 0)] {
            let response = try await client.send("PUT", .payment, "/accounts/\(customer)", json: Account(balance: balance))
            guard response.status == 200 else { throw CLIError("could not set up account \(customer): \(response.problem)") }
        }
        // The order service learns of products through events: wait until it prices them.
        let catalogue = try PostgresIdentifier.quoted(environment.schema(of: .order)) + ".catalogue"
        for _ in 0..<100 {
            let known = try await database.query(
                "SELECT count(*) FROM \(catalogue) WHERE sku IN ('LOAD-PLENTY', 'LOAD-NONE')"
            ).first?.decode(Int.self, at: 0)
            if known == 2 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CLIError("the order service did not learn of the load products within 10 s: is it consuming? see its log")
    }

    private func place(_ index: Int, kind: Mix.Kind, due: Date, client: ServiceClient, run: LoadRun) async {
        let (customer, sku) =
            switch kind {
            case .happy: ("load-\(index % customers + 1)", "LOAD-PLENTY")
            case .outOfStock: ("load-\(index % customers + 1)", "LOAD-NONE")
            case .declined: ("load-broke", "LOAD-PLENTY")
            }
        let body = OrderCommand.Place.Body(customerId: customer, items: [.init(sku: sku, quantity: 1)])
        let sent = ContinuousClock.now
        do {
            let response = try await client.send("POST", .order, "/orders", json: body)
            let latency = ContinuousClock.now - sent
            if response.status == 202, let order = try? response.decode(OrderView.self), let id = UUID(uuidString: order.orderId) {
                await run.placed(id, due: due, latency: latency)
            } else {
                await run.failed("POST /orders answered \(response.status): \(response.problem)")
            }
        } catch {
            await run.failed("\(error)")
        }
    }

    private func reportProgress(
        _ run: LoadRun, started: ContinuousClock.Instant, database: PostgresConnection, environment: BazaarEnvironment
    ) async {
        guard !output.json else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if let settled = try? await settledCount(of: await run.orderIds, database: database, environment: environment) {
                await run.setSettled(settled)
            }
            let (placed, failed, settled) = await (run.placedCount, run.failures.count, run.settledCount)
            let elapsed = Int((ContinuousClock.now - started).seconds)
            print("  [\(String(format: "%4d", elapsed))s] placed \(placed)/\(run.total)  settled \(settled)  failed \(failed)")
            fflush(nil)  // live even when the output is a pipe (nil: every stream; `stdout` is not concurrency-safe)
        }
    }

    private func settledCount(of ids: [UUID], database: PostgresConnection, environment: BazaarEnvironment) async throws -> Int {
        let orders = try PostgresIdentifier.quoted(environment.schema(of: .order)) + ".orders"
        let list = "{" + ids.map { $0.uuidString.lowercased() }.joined(separator: ",") + "}"
        return try await database.query(
            "SELECT count(*) FROM \(orders) WHERE order_id = ANY($1::uuid[]) AND status <> 'pending'", list
        ).first?.decode(Int.self, at: 0) ?? 0
    }

    /// Polls the order service's table until every placed order is confirmed or cancelled.
    private func waitUntilSettled(
        _ run: LoadRun, database: PostgresConnection, environment: BazaarEnvironment
    ) async throws -> [SettledOrder] {
        let orders = try PostgresIdentifier.quoted(environment.schema(of: .order)) + ".orders"
        let ids = await run.orderIds
        let list = "{" + ids.map { $0.uuidString.lowercased() }.joined(separator: ",") + "}"
        let deadline = ContinuousClock.now + .seconds(settleTimeout)
        while true {
            let rows = try await database.query(
                """
                SELECT order_id, status, reason, extract(epoch FROM updated_at)::text AS settled_at
                FROM \(orders) WHERE order_id = ANY($1::uuid[]) AND status <> 'pending'
                """, list)
            await run.setSettled(rows.count)
            if rows.count == ids.count || ContinuousClock.now > deadline {
                let due = await run.due
                return try rows.map { row in
                    let id = try row.decode(UUID.self, column: "order_id")
                    let settledAt = Double(try row.decode(String.self, column: "settled_at")) ?? 0
                    return SettledOrder(
                        status: try row.decode(String.self, column: "status"), reason: try row.decode(String?.self, column: "reason"),
                        seconds: settledAt - (due[id]?.timeIntervalSince1970 ?? settledAt))
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    static func parseDuration(_ text: String) throws -> Duration {
        let number = text.trimmingCharacters(in: .letters)
        guard let value = Double(number), value > 0 else { throw ValidationError("\(text) is not a duration like 60s or 2m") }
        switch text.dropFirst(number.count) {
        case "", "s": return .seconds(value)
        case "m": return .seconds(value * 60)
        case "ms": return .milliseconds(Int(value))
        default: throw ValidationError("\(text) is not a duration like 60s or 2m")
        }
    }
}

/// The shares of each outcome in a load run.
struct Mix: Codable, Sendable, CustomStringConvertible {
    enum Kind { case happy, outOfStock, declined }

    var happy: Int
    var outOfStock: Int
    var declined: Int

    var description: String { "mix happy=\(happy),out-of-stock=\(outOfStock),declined=\(declined)" }

    static func parse(_ text: String) throws -> Mix {
        var mix = Mix(happy: 0, outOfStock: 0, declined: 0)
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=")
            guard pair.count == 2, let weight = Int(pair[1]), weight >= 0 else {
                throw ValidationError("--mix \(text): expected happy=N,out-of-stock=N,declined=N")
            }
            switch pair[0] {
            case "happy": mix.happy = weight
            case "out-of-stock": mix.outOfStock = weight
            case "declined": mix.declined = weight
            default: throw ValidationError("--mix: unknown outcome \(pair[0]) (happy, out-of-stock, declined)")
            }
        }
        guard mix.happy + mix.outOfStock + mix.declined > 0 else { throw ValidationError("--mix: the weights add up to 0") }
        return mix
    }

    /// The kind of each of `count` orders, spread evenly: after any number of orders, each kind's
    /// count is within one of its share (smooth weighted round-robin).
    func kinds(count: Int) -> [Kind] {
        let weights: [(Kind, Int)] = [(.happy, happy), (.outOfStock, outOfStock), (.declined, declined)]
        let total = happy + outOfStock + declined
        var credit = [0, 0, 0]
        return (0..<count).map { _ in
            for index in weights.indices { credit[index] += weights[index].1 }
            let chosen = credit.indices.max { credit[$0] < credit[$1] }!
            credit[chosen] -= total
            return weights[chosen].0
        }
    }
}

/// What a load run collects while it runs.
actor LoadRun {
    let total: Int
    private(set) var orderIds: [UUID] = []
    /// When each order was scheduled to arrive.
    private(set) var due: [UUID: Date] = [:]
    private(set) var postLatencies: [Duration] = []
    private(set) var failures: [String] = []
    private(set) var settledCount = 0

    init(total: Int) { self.total = total }

    var placedCount: Int { orderIds.count }

    func placed(_ id: UUID, due: Date, latency: Duration) {
        orderIds.append(id)
        self.due[id] = due
        postLatencies.append(latency)
    }

    func failed(_ reason: String) { failures.append(reason) }
    func setSettled(_ count: Int) { settledCount = count }
}

struct SettledOrder {
    var status: String
    var reason: String?
    var seconds: Double
}

/// The outcome of a load run, for people and for machines.
struct LoadReport: Codable {
    struct Percentiles: Codable {
        var p50: Double
        var p90: Double
        var p99: Double
        var p999: Double
        var max: Double

        /// Milliseconds, from values in microseconds.
        init(_ microseconds: [UInt64]) {
            var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
            for value in microseconds { _ = histogram.record(Swift.max(1, value)) }
            func ms(_ value: UInt64) -> Double { (Double(value) / 10).rounded() / 100 }
            p50 = ms(histogram.valueAtPercentile(50))
            p90 = ms(histogram.valueAtPercentile(90))
            p99 = ms(histogram.valueAtPercentile(99))
            p999 = ms(histogram.valueAtPercentile(99.9))
            max = ms(histogram.max)
        }
    }

    var targetRate: Double
    var mix: Mix
    var placed: Int
    var failed: Int
    var settled: Int
    var placingSeconds: Double
    var elapsedSeconds: Double
    /// Settled orders per second of the placing period.
    var throughput: Double
    var outcomes: [String: Int]
    var placedToSettledMs: Percentiles
    var postOrdersMs: Percentiles
    var firstFailures: [String]

    static func build(
        run: LoadRun, orders: [SettledOrder], placingTime: Duration, elapsed: Duration, rate: Double, mix: Mix
    ) async throws -> LoadReport {
        var outcomes: [String: Int] = [:]
        for order in orders { outcomes[order.reason.map { "\(order.status)/\($0)" } ?? order.status, default: 0] += 1 }
        let failures = await run.failures
        return LoadReport(
            targetRate: rate, mix: mix, placed: await run.placedCount, failed: failures.count, settled: orders.count,
            placingSeconds: placingTime.seconds, elapsedSeconds: elapsed.seconds,
            throughput: Double(orders.count) / max(placingTime.seconds, 0.001), outcomes: outcomes,
            placedToSettledMs: Percentiles(orders.map { UInt64(max(0, $0.seconds) * 1_000_000) }),
            postOrdersMs: Percentiles(await run.postLatencies.map { UInt64($0.seconds * 1_000_000) }),
            firstFailures: Array(failures.prefix(5)))
    }

    func rendered() -> String {
        func row(_ name: String, _ p: Percentiles) -> String {
            "  \(name.padding(toLength: 20, withPad: " ", startingAt: 0))p50 \(p.p50) ms  p90 \(p.p90) ms  p99 \(p.p99) ms  p99.9 \(p.p999) ms  max \(p.max) ms"
        }
        var lines = [
            "result: \(placed) placed, \(settled) settled, \(failed) failed; \(String(format: "%.1f", throughput)) orders/s over \(String(format: "%.1f", placingSeconds)) s (target \(targetRate))",
            "  " + outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: " · "),
            row("placed → settled", placedToSettledMs),
            row("POST /orders", postOrdersMs),
        ]
        if settled < placed { lines.append("  \(placed - settled) orders had not settled when the wait ended") }
        lines += firstFailures.map { "  failure: \($0)" }
        return lines.joined(separator: "\n")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

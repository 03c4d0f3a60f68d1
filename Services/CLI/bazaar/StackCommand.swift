import AMQP
import ArgumentParser
import Contracts
import Foundation
import Logging
import Postgres

/// `bazaar stack`: the local stack, as `make run` and `make stop` run it, and its state.
struct StackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stack", abstract: "Start, stop or inspect the local stack (RabbitMQ, PostgreSQL, the four services).",
        subcommands: [Up.self, Down.self, Status.self])

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start everything (what `make run` does).")
        func run() async throws {
            try runScript("stack.sh", "up")
            try runScript("services.sh", "up")
        }
    }

    struct Down: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop everything `up` started (what `make stop` does).")
        func run() async throws {
            try runScript("services.sh", "down")
            try runScript("stack.sh", "down")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Health of each service, queue depths and outbox backlogs.")
        @OptionGroup var output: OutputOptions

        struct Report: Codable {
            var services: [String: String]
            var queues: [String: Int]
            var unpublishedEvents: [String: Int]
            var oldestUnpublishedSeconds: [String: Double]
        }

        func run() async throws {
            let environment = BazaarEnvironment.load()
            let client = ServiceClient(environment: environment)
            var report = Report(services: [:], queues: [:], unpublishedEvents: [:], oldestUnpublishedSeconds: [:])
            for service in ServiceName.allCases {
                do {
                    let response = try await client.send("GET", service, "/health/ready")
                    report.services[service.rawValue] = response.status == 200 ? "ready" : "not ready: \(String(decoding: response.body, as: UTF8.self))"
                } catch {
                    report.services[service.rawValue] = "not reachable at \(environment.url(of: service))"
                }
            }
            if let connection = try? await AMQPConnection.connect(
                try AMQPConfiguration(url: environment.amqpURL, connectionName: "bazaar-cli"), logger: cliLogger)
            {
                for service in ServiceName.allCases {
                    for queue in [service.queue, service.deadLetterQueue] {
                        report.queues[queue] = (try? await connection.queueStatus(queue))?.messages ?? -1
                    }
                }
                await connection.close()
            }
            if let database = try? await PostgresConnection.connect(
                configuration: try PostgresConfiguration(url: environment.databaseURL, applicationName: "bazaar-cli"),
                logger: cliLogger)
            {
                for service in ServiceName.allCases {
                    let outbox = try PostgresIdentifier.quoted(environment.schema(of: service)) + ".outbox"
                    if let row = try? await database.query(
                        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::text AS age FROM \(outbox) WHERE published_at IS NULL"
                    ).first {
                        report.unpublishedEvents[service.rawValue] = try row.decode(Int.self, column: "n")
                        report.oldestUnpublishedSeconds[service.rawValue] = Double(try row.decode(String.self, column: "age")) ?? 0
                    }
                }
                await database.close()
            }
            // Exit non-zero unless every service is ready, so scripts can wait on it.
            let allReady = report.services.values.allSatisfy { $0 == "ready" }
            if output.json {
                print(try jsonText(report))
                if !allReady { throw ExitCode.failure }
                return
            }
            print("services")
            for service in ServiceName.allCases { print("  \(service.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0))\(report.services[service.rawValue] ?? "?")") }
            print("queues (ready messages)")
            if report.queues.isEmpty { print("  broker not reachable at \(environment.amqpURL.replacingOccurrences(of: #"//[^@]*@"#, with: "//", options: .regularExpression))") }
            for (queue, depth) in report.queues.sorted(by: { $0.key < $1.key }) {
                print("  \(queue.padding(toLength: 18, withPad: " ", startingAt: 0))\(depth < 0 ? "missing" : "\(depth)")")
            }
            print("outbox backlog (unpublished events)")
            if report.unpublishedEvents.isEmpty { print("  database not reachable") }
            for (service, count) in report.unpublishedEvents.sorted(by: { $0.key < $1.key }) {
                let age = report.oldestUnpublishedSeconds[service] ?? 0
                print("  \(service.padding(toLength: 14, withPad: " ", startingAt: 0))\(count)\(count > 0 ? String(format: ", oldest %.1f s", age) : "")")
            }
            if !allReady {
                throw CLIError("not every service is ready: see above; logs in .run/logs/, or `make run` to start them")
            }
        }
    }
}

extension StackCommand {
    /// The repository: from the stack's run folder, or the nearest folder up that holds scripts/stack.sh.
    static func repository() -> URL? { repositoryFromCurrentDirectory() ?? BazaarEnvironment.load().repository }
}

/// Runs one of the repository's scripts, streaming its output.
private func runScript(_ name: String, _ argument: String) throws {
    guard let repository = StackCommand.repository() else {
        throw CLIError("can't find the Bazaar repository: run bazaar from inside it, or set BAZAAR_RUN_DIR")
    }
    let script = repository.appendingPathComponent("scripts/\(name)")
    let process = Process()
    process.executableURL = script
    process.arguments = [argument]
    process.currentDirectoryURL = repository
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw CLIError("scripts/\(name) \(argument) failed (its output is above)") }
}

/// The nearest folder, from here up, that holds scripts/stack.sh.
private func repositoryFromCurrentDirectory() -> URL? {
    var folder = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    while true {
        if FileManager.default.fileExists(atPath: folder.appendingPathComponent("scripts/stack.sh").path) { return folder }
        let parent = folder.deletingLastPathComponent()
        if parent.path == folder.path { return nil }
        folder = parent
    }
}

import Auth
import Contracts
import EventRuntime
import Foundation
import Logging

/// Where the running system is, as the CLI finds it: each setting from the process environment
/// first, then from the stack's `.run/stack.env` (found through `BAZAAR_RUN_DIR`, or by looking
/// in the current folder and its parents), then the local stack's defaults.
struct BazaarEnvironment: Sendable {
    var values: [String: String]
    /// The stack.env file that was read, if any.
    var stackFile: URL?

    static func load(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> BazaarEnvironment {
        var values: [String: String] = [:]
        let file = findStackFile(environment)
        if let file, let text = try? String(contentsOf: file, encoding: .utf8) {
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let equals = line.firstIndex(of: "=") else { continue }
                values[String(line[..<equals])] = String(line[line.index(after: equals)...])
            }
        }
        values.merge(environment.filter { !$0.value.isEmpty }) { _, process in process }
        return BazaarEnvironment(values: values, stackFile: file)
    }

    private static func findStackFile(_ environment: [String: String]) -> URL? {
        if let runDirectory = environment["BAZAAR_RUN_DIR"] {
            return URL(fileURLWithPath: runDirectory).appendingPathComponent("stack.env")
        }
        var folder = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        while true {
            let candidate = folder.appendingPathComponent(".run/stack.env")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
            let parent = folder.deletingLastPathComponent()
            if parent.path == folder.path { return nil }
            folder = parent
        }
    }

    /// The repository the stack file belongs to (for `bazaar stack`).
    var repository: URL? {
        if let runDirectory = values["BAZAAR_RUN_DIR"] { return URL(fileURLWithPath: runDirectory).deletingLastPathComponent() }
        return stackFile?.deletingLastPathComponent().deletingLastPathComponent()
    }

    var amqpURL: String { values["AMQP_URL"] ?? "amqp://bazaar:bazaar@127.0.0.1:5673/%2f" }
    var databaseURL: String { values["DATABASE_URL"] ?? "postgres://bazaar:bazaar@127.0.0.1:5433/bazaar" }

    /// `AUTH_JWT_SECRET`: the key the services verify bearer tokens with; the CLI signs its own
    /// (admin) tokens with it, and `bazaar token` prints tokens for others.
    var authSecret: String? { values["AUTH_JWT_SECRET"] }

    /// `ADMIN_TOKEN`: a ready-made admin token, used when the secret isn't at hand.
    var adminToken: String? { values["ADMIN_TOKEN"] }

    /// An admin bearer token for the APIs: `ADMIN_TOKEN`, or one signed with `AUTH_JWT_SECRET`.
    func adminBearer() async throws -> String {
        if let adminToken { return adminToken }
        return try await tokenAuthority().issue(for: .admin)
    }

    func tokenAuthority() async throws -> TokenAuthority {
        guard let authSecret else {
            throw CLIError(
                "no AUTH_JWT_SECRET (nor ADMIN_TOKEN): is the stack up? `make run` writes both to .run/stack.env")
        }
        do {
            return try await TokenAuthority(secret: authSecret)
        } catch {
            throw CLIError("AUTH_JWT_SECRET: \(error)")
        }
    }

    /// `AMQP_PUBLISHER_USERS`, as the services read it: the broker user each service publishes
    /// as, which a replay must set as `user-id` (default: the services' names).
    var publisherUsers: PublisherUsers { (try? PublisherUsers(parsing: values["AMQP_PUBLISHER_USERS"])) ?? .serviceNames }

    /// `ORDER_URL`, `INVENTORY_URL`… (default: the local stack's ports).
    func url(of service: ServiceName) -> String {
        values["\(service.rawValue.uppercased())_URL"] ?? "http://127.0.0.1:\(Self.defaultPorts[service]!)"
    }

    /// `ORDER_SCHEMA`, `INVENTORY_SCHEMA`… (default: `orders`, `inventory`, `payments`, `notifications`).
    func schema(of service: ServiceName) -> String {
        values["\(service.rawValue.uppercased())_SCHEMA"] ?? Self.defaultSchemas[service]!
    }

    static let defaultPorts: [ServiceName: Int] = [.order: 8080, .inventory: 8081, .payment: 8082, .notification: 8083]
    static let defaultSchemas: [ServiceName: String] = [
        .order: "orders", .inventory: "inventory", .payment: "payments", .notification: "notifications",
    ]
}

/// An error the CLI explains to a person: what failed, and what to do about it.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The CLI's own logging: warnings and errors only, so its output stays the user's.
let cliLogger: Logger = {
    var logger = Logger(label: "bazaar")
    logger.logLevel = .warning
    return logger
}()

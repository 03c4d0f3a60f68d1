import AMQP
import Auth
import Foundation
import Logging
import Postgres
import Synchronization
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The four services started as real processes — the executables `swift build` made — against
/// the local stack's RabbitMQ and PostgreSQL, isolated from everything else: their own virtual
/// host, their own schemas (suffixed), their own ports. Torn down (SIGTERM, then schemas and
/// virtual host dropped) when the test ends, whatever its outcome.
final class RunningSystem: @unchecked Sendable {
    // @unchecked: `processes` is only changed by the test's own task (start/stop), never concurrently.
    enum Service: String, CaseIterable, Sendable {
        case order, inventory, payment, notification

        var schema: String {
            switch self {
            case .order: "orders"
            case .inventory: "inventory"
            case .payment: "payments"
            case .notification: "notifications"
            }
        }
    }

    let vhost: TemporaryVirtualHost
    let suffix = "e2e_" + UUID().uuidString.prefix(8).lowercased()
    let logDirectory: URL
    let pool: PostgresPool
    private(set) var ports: [Service: Int] = [:]
    private var processes: [(name: String, process: Process)] = []
    /// Where the services find the broker, if not straight at it (a test's proxy, say).
    var amqpURLOverride: String?
    /// Settings for every service started from now on (they win over the defaults above).
    var extraEnvironment: [String: String]

    /// Where `swift build` put the executables: beside the test bundle.
    static let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()

    /// The deployment's broker users, when the services run as them (`serviceUsers: true`).
    private(set) var users: ServiceUsers?

    /// - Parameter serviceUsers: run each service as its own broker user, with the deployment's
    ///   definitions loaded into the virtual host (otherwise all run as the stack's admin).
    init(environment: [String: String] = [:], serviceUsers: Bool = false) async throws {
        vhost = try TemporaryVirtualHost.create(prefix: "e2e")
        if serviceUsers { users = try ServiceUsers.load(into: vhost) }
        logDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("bazaar-\(suffix)")
        try FileManager.default.createDirectory(at: logDirectory, withIntermediateDirectories: true)
        pool = PostgresPool(
            configuration: try PostgresConfiguration(url: try StackEnvironment.databaseURL), logger: Logger(label: "e2e"))
        extraEnvironment = environment
        for service in Service.allCases { ports[service] = try Self.freePort() }
    }

    func schema(_ service: Service) -> String { "\(service.schema)_\(suffix)" }
    func url(_ service: Service) -> String { "http://127.0.0.1:\(ports[service]!)" }

    /// Rows of `service`'s outbox not marked published yet (the relay marks a confirmed event up to
    /// its `markDelay` later).
    func unpublishedEvents(of service: Service) async throws -> Int {
        try await pool.query("SELECT count(*) FROM \(schema(service)).outbox WHERE published_at IS NULL")[0].decode(Int.self, at: 0)
    }

    /// Starts one instance of each of `services` and waits until all are ready.
    func start(_ services: [Service] = Service.allCases, instance: Int = 1) async throws {
        for service in services { try launch(service, instance: instance) }
        for service in services { try await waitUntilReady(service, instance: instance) }
    }

    /// A second (third…) instance listens on a port of its own; it shares queue and schema.
    private func launch(_ service: Service, instance: Int) throws {
        let executable = Self.binDirectory.appendingPathComponent("\(service.rawValue)-service")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw SystemError("no executable at \(executable.path): build with `swift build --build-tests`")
        }
        let port = instance == 1 ? ports[service]! : try Self.freePort()
        let process = Process()
        process.executableURL = executable
        var environment = ProcessInfo.processInfo.environment
        if let users {
            environment["AMQP_URL"] = try users.amqpURL(of: service.rawValue)
            environment["AMQP_DECLARE_TOPOLOGY"] = "none"  // the definitions did; the users may not
            environment["AMQP_PUBLISHER_USERS"] = Service.allCases.map { "\($0.rawValue)=\(ServiceUsers.user($0.rawValue, in: vhost))" }
                .joined(separator: ",")
        } else {
            environment["AMQP_URL"] = amqpURLOverride ?? vhost.amqpURL
            // Every service logs in as the admin of the throw-away virtual host, so that is the
            // user each one's events carry.
            let user = URLComponents(string: vhost.amqpURL)?.user ?? "bazaar"
            environment["AMQP_PUBLISHER_USERS"] = Service.allCases.map { "\($0.rawValue)=\(user)" }.joined(separator: ",")
        }
        environment["DATABASE_URL"] = try StackEnvironment.databaseURL
        environment["DATABASE_SCHEMA"] = schema(service)
        environment["HTTP_PORT"] = "\(port)"
        environment["INSTANCE_NAME"] = "\(service.rawValue)-\(instance)-\(suffix)"
        environment["OUTBOX_POLL_INTERVAL_MS"] = "200"
        environment["AUTH_JWT_SECRET"] = TestTokens.secret
        environment.merge(extraEnvironment) { $1 }
        process.environment = environment
        let log = logDirectory.appendingPathComponent("\(service.rawValue)-\(instance).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes.append(("\(service.rawValue)-\(instance)@\(port)", process))
        if instance != 1 { extraPorts["\(service.rawValue)-\(instance)"] = port }
    }

    private var extraPorts: [String: Int] = [:]

    private func waitUntilReady(_ service: Service, instance: Int) async throws {
        let port = instance == 1 ? ports[service]! : extraPorts["\(service.rawValue)-\(instance)"]!
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let (status, _) = try? await HTTP.get("http://127.0.0.1:\(port)/health/ready"), status == 200 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw SystemError("\(service)-\(instance) not ready within 30 s; its log:\n\(log(of: service, instance: instance))")
    }

    func log(of service: Service, instance: Int = 1) -> String {
        (try? String(contentsOf: logDirectory.appendingPathComponent("\(service.rawValue)-\(instance).log"), encoding: .utf8)) ?? ""
    }

    /// Stops every instance of `service` (SIGTERM, then waits for it to exit).
    func stop(_ service: Service) {
        for (name, process) in processes where name.hasPrefix("\(service.rawValue)-") && process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// Runs a service executable outside any system for `duration`, then stops it: what it printed.
    static func output(of executable: String, environment: [String: String], for duration: Duration) async throws -> String {
        let process = Process()
        process.executableURL = binDirectory.appendingPathComponent(executable)
        var merged = ProcessInfo.processInfo.environment
        merged["HTTP_PORT"] = "\(try freePort())"
        merged.merge(environment) { $1 }
        process.environment = merged
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        try await Task.sleep(for: duration)
        process.terminate()
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    /// Sends SIGTERM to the first instance of `service` and waits for it to exit: its exit status
    /// and how long it took.
    func terminate(_ service: Service) async -> (status: Int32, took: Duration) {
        guard let process = processes.first(where: { $0.name.hasPrefix("\(service.rawValue)-1@") })?.process else {
            return (-1, .zero)
        }
        let started = ContinuousClock.now
        process.terminate()
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        return (process.terminationStatus, ContinuousClock.now - started)
    }

    func tearDown() async {
        for (_, process) in processes where process.isRunning { process.terminate() }
        for (_, process) in processes { process.waitUntilExit() }
        for service in Service.allCases { _ = try? await pool.execute("DROP SCHEMA IF EXISTS \(schema(service)) CASCADE") }
        await pool.shutdown()
        vhost.delete()
        users?.delete()
        try? FileManager.default.removeItem(at: logDirectory)
    }

    /// A port nobody listens on right now, for a server started soon after.
    ///
    /// Chosen below the kernel's ephemeral range (`ip_local_port_range`): a port the kernel hands
    /// out (binding to port 0) is free only until the next outgoing connection, which may take it
    /// as its local port before the server binds it; one below that range no connection takes.
    /// Never the same port twice in one test run.
    static func freePort() throws -> Int {
        let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
        let candidates = 10_000..<max(ephemeralStart, 20_000)
        for _ in 0..<200 {
            let port = Int.random(in: candidates)
            guard handedOut.withLock({ $0.insert(port).inserted }), canBind(port) else { continue }
            return port
        }
        throw SystemError("could not find a free port in \(candidates)")
    }

    private static let handedOut = Mutex<Set<Int>>([])

    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

struct SystemError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` against a freshly started system and always tears it down; on failure the
/// services' logs are attached to the test's issues.
func withSystem(
    environment: [String: String] = [:], start services: [RunningSystem.Service] = RunningSystem.Service.allCases,
    _ body: (RunningSystem) async throws -> Void
) async throws {
    let system = try await RunningSystem(environment: environment)
    do {
        try await system.start(services)
        try await body(system)
    } catch {
        for service in RunningSystem.Service.allCases {
            let log = system.log(of: service)
            if !log.isEmpty { Issue.record("\(service) log (last lines):\n\(log.split(separator: "\n").suffix(15).joined(separator: "\n"))") }
        }
        await system.tearDown()
        throw error
    }
    await system.tearDown()
}

/// The bearer tokens of the tests: signed with a secret made for this test run, which every
/// service the tests start is given.
enum TestTokens {
    static let secret = (0..<4).map { _ in UUID().uuidString.replacingOccurrences(of: "-", with: "") }.joined()
    private static let authority = Task { try await TokenAuthority(secret: secret) }

    static func token(for caller: Caller) async throws -> String {
        try await authority.value.issue(for: caller)
    }
}

/// Who a test request speaks for.
enum Bearer: Sendable {
    case admin
    case customer(String)
    /// No Authorization header at all.
    case none
    /// Exactly this header value after "Bearer " (a forged or expired token).
    case raw(String)
}

/// Just enough HTTP for the tests: JSON in, status and JSON out; as admin unless told otherwise.
enum HTTP {
    static func get(_ url: String, as bearer: Bearer = .admin) async throws -> (Int, Any?) {
        try await send("GET", url, body: nil, as: bearer)
    }

    static func post(_ url: String, json: Any?, headers: [String: String] = [:], as bearer: Bearer = .admin) async throws -> (Int, Any?) {
        try await send("POST", url, body: json.map { try JSONSerialization.data(withJSONObject: $0) }, headers: headers, as: bearer)
    }

    static func put(_ url: String, json: Any, as bearer: Bearer = .admin) async throws -> (Int, Any?) {
        try await send("PUT", url, body: try JSONSerialization.data(withJSONObject: json), as: bearer)
    }

    /// Sends raw bytes (for malformed bodies); returns status, content type and parsed JSON.
    static func send(
        _ method: String, _ url: String, body: Data?, headers: [String: String] = [:], as bearer: Bearer = .admin
    ) async throws -> (Int, Any?) {
        let (status, _, json) = try await exchange(method, url, body: body, headers: headers, as: bearer)
        return (status, json)
    }

    static func exchange(
        _ method: String, _ url: String, body: Data?, headers: [String: String] = [:], as bearer: Bearer = .admin
    ) async throws -> (status: Int, contentType: String?, json: Any?) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.httpBody = body
        request.timeoutInterval = 10
        if body != nil { request.setValue("application/json", forHTTPHeaderField: "Content-Type") }
        switch bearer {
        case .admin: request.setValue("Bearer \(try await TestTokens.token(for: .admin))", forHTTPHeaderField: "Authorization")
        case .customer(let id):
            request.setValue("Bearer \(try await TestTokens.token(for: .customer(id)))", forHTTPHeaderField: "Authorization")
        case .raw(let token): request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        case .none: break
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        return (http.statusCode, http.value(forHTTPHeaderField: "Content-Type"), try? JSONSerialization.jsonObject(with: data))
    }
}

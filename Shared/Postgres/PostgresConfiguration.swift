import Foundation

/// Where and how to connect to PostgreSQL.
///
/// Usually built from a URL, `postgres://user:pass@host:port/db?sslmode=require`. Every
/// connection we open also sets two things on its session, because the value codecs depend on
/// them: `TimeZone=UTC` (timestamps are printed with `+00`) and `DateStyle=ISO` (the format the
/// timestamp parser reads); and `application_name`, so an operator can tell in
/// `pg_stat_activity` which service holds a connection.
public struct PostgresConfiguration: Sendable, Equatable, CustomStringConvertible {
    /// Host name, IP address, or a directory holding the server's Unix socket (`/var/run/postgresql`).
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    /// The database; libpq's default (the user name) when `nil`.
    public var database: String?
    /// Shown in `pg_stat_activity.application_name`.
    public var applicationName: String
    /// Further libpq connection keywords, passed through unchanged: `sslmode`, `sslrootcert`,
    /// `connect_timeout`, `keepalives_idle`… (see libpq's "Parameter Key Words"). libpq rejects
    /// unknown ones when connecting.
    public var parameters: [String: String]

    public init(
        host: String = "127.0.0.1", port: Int = 5432, user: String = "postgres", password: String? = nil,
        database: String? = nil, applicationName: String = "bazaar", parameters: [String: String] = [:]
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.applicationName = applicationName
        self.parameters = parameters
    }

    /// Parses `postgres://user:pass@host:port/db?key=value&…` (or `postgresql://`).
    ///
    /// User, password and database are percent-decoded. Query parameters are libpq keywords:
    /// `host`, `port`, `user`, `password` and `dbname` override the URL's parts (so
    /// `postgres:///db?host=/var/run/postgresql` reaches a Unix socket), `application_name`
    /// overrides `applicationName` (the operator's URL wins over the code's default), and the
    /// rest go to `parameters`.
    public init(url string: String, applicationName: String = "bazaar") throws {
        func invalid(_ reason: String) -> PostgresError {
            PostgresError(.invalidConfiguration, message: "invalid PostgreSQL URL: \(reason)")
        }
        guard let components = URLComponents(string: string), let scheme = components.scheme?.lowercased() else {
            throw invalid("not a URL")
        }
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw invalid("scheme must be postgres or postgresql")
        }
        self.init(applicationName: applicationName)
        if let host = components.percentEncodedHost?.removingPercentEncoding, !host.isEmpty {
            // URLComponents keeps the brackets of an IPv6 literal; libpq wants the bare address.
            self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        }
        if let port = components.port { self.port = port }
        if let user = components.percentEncodedUser?.removingPercentEncoding, !user.isEmpty { self.user = user }
        password = components.percentEncodedPassword?.removingPercentEncoding
        let path = components.percentEncodedPath
        if path.count > 1 {
            guard let database = String(path.dropFirst()).removingPercentEncoding else {
                throw invalid("the database name is not valid percent-encoding")
            }
            self.database = database
        }
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "host": host = value
            case "port":
                guard let port = Int(value), (1...65535).contains(port) else { throw invalid("port must be 1…65535") }
                self.port = port
            case "user": user = value
            case "password": password = value
            case "dbname": database = value
            case "application_name": self.applicationName = value
            case "": throw invalid("empty query parameter name")
            default: parameters[item.name] = value
            }
        }
    }

    /// The URL without its password (nor `sslpassword`): safe for logs and error messages.
    public var description: String {
        var text = "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database ?? "")"
        let query = parameters.keys.sorted().filter { !$0.contains("password") }.map { "\($0)=\(parameters[$0]!)" }
        if !query.isEmpty { text += "?" + query.joined(separator: "&") }
        return text
    }

    /// The keyword/value pairs handed to `PQconnectdbParams`, in a stable order.
    var libpqParameters: [(keyword: String, value: String)] {
        var result: [(keyword: String, value: String)] = [
            ("host", host), ("port", String(port)), ("user", user),
        ]
        if let password { result.append(("password", password)) }
        if let database { result.append(("dbname", database)) }
        result.append(("application_name", applicationName))
        // Our codecs read and write UTF-8 text, UTC ISO timestamps and hex bytea whatever the
        // server's defaults say. Passed as startup `options` rather than a later SET, they survive
        // PQreset. A caller's own `options` come after ours, so theirs win where both set a value.
        let sessionOptions = "-c TimeZone=UTC -c DateStyle=ISO,MDY -c bytea_output=hex"
        result.append(("client_encoding", "UTF8"))
        for keyword in parameters.keys.sorted() where keyword != "options" && keyword != "client_encoding" {
            result.append((keyword, parameters[keyword]!))
        }
        result.append(("options", [sessionOptions, parameters["options"]].compactMap { $0 }.joined(separator: " ")))
        return result
    }
}

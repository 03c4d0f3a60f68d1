import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An IP address, as bytes, and whether a webhook may be sent to it.
///
/// A webhook URL is chosen by whoever registers it, and the notification service sends requests
/// to it from inside our network: without these checks it would be a server-side request forgery
/// hole (a URL naming the cloud metadata service, the database, an admin port on loopback).
public enum IPAddress: Sendable, Equatable, CustomStringConvertible {
    case v4(UInt32)
    case v6([UInt8])

    /// Parses a textual address (`10.0.0.1`, `::1`, `[::1]`); nil for anything else, host names
    /// included. (`inet_pton` is a pure parser: it touches no network.)
    public init?(_ text: String) {
        var text = text
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: &v6) { Array($0) })
            return
        }
        return nil
    }

    public var description: String {
        switch self {
        case .v4(let value): return [24, 16, 8, 0].map { String((value >> UInt32($0)) & 0xff) }.joined(separator: ".")
        case .v6(let bytes):
            return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
                .joined(separator: ":")
        }
    }

    /// Why a webhook may not go to this address (loopback, private, link-local…), or nil if it
    /// is an ordinary public unicast address.
    public var nonPublicRange: String? {
        switch self {
        case .v4(let address): return Self.nonPublicRange(v4: address)
        case .v6(let bytes):
            // An IPv4 address in IPv6 clothing (mapped ::ffff:a.b.c.d, or NAT64 64:ff9b::a.b.c.d)
            // is judged as the IPv4 address it reaches.
            let embedded = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
                return Self.nonPublicRange(v4: embedded)
            }
            if bytes[0..<12] == [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] { return Self.nonPublicRange(v4: embedded) }
            if bytes.allSatisfy({ $0 == 0 }) { return "unspecified (::)" }
            if bytes[0..<15].allSatisfy({ $0 == 0 }), bytes[15] == 1 { return "loopback (::1)" }
            if bytes[0] & 0xfe == 0xfc { return "unique local (fc00::/7)" }
            if bytes[0] == 0xfe, bytes[1] & 0xc0 == 0x80 { return "link-local (fe80::/10)" }
            if bytes[0] == 0xfe, bytes[1] & 0xc0 == 0xc0 { return "site-local (fec0::/10)" }
            if bytes[0] == 0xff { return "multicast (ff00::/8)" }
            if bytes[0..<12].allSatisfy({ $0 == 0 }) { return "IPv4-compatible (::/96)" }
            return nil
        }
    }

    private static let v4Ranges: [(network: UInt32, prefix: UInt32, name: String)] = [
        (0x0000_0000, 8, "unspecified (0.0.0.0/8)"),
        (0x0a00_0000, 8, "private (10.0.0.0/8)"),
        (0x6440_0000, 10, "carrier-grade NAT (100.64.0.0/10)"),
        (0x7f00_0000, 8, "loopback (127.0.0.0/8)"),
        (0xa9fe_0000, 16, "link-local (169.254.0.0/16, cloud metadata)"),
        (0xac10_0000, 12, "private (172.16.0.0/12)"),
        (0xc000_0000, 24, "IETF protocol assignments (192.0.0.0/24)"),
        (0xc0a8_0000, 16, "private (192.168.0.0/16)"),
        (0xc612_0000, 15, "benchmarking (198.18.0.0/15)"),
        (0xe000_0000, 4, "multicast (224.0.0.0/4)"),
        (0xf000_0000, 4, "reserved or broadcast (240.0.0.0/4)"),
    ]

    private static func nonPublicRange(v4 address: UInt32) -> String? {
        v4Ranges.first { address & (UInt32.max << (32 - $0.prefix)) == $0.network }?.name
    }
}

/// A webhook URL that passed the checks a registration gets: http or https, a host, no user or
/// password, and — unless private targets are allowed — no loopback or private address literal
/// and no `localhost`. (A host name is resolved and its addresses checked again at every
/// delivery, since what it resolves to may change after registration: DNS rebinding.)
public struct WebhookTarget: Sendable, Equatable {
    public let url: URL
    /// The host, lower-cased, without brackets: what the circuit breaker is keyed by.
    public let host: String

    public struct Refused: Error, Equatable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    public init(_ text: String, allowPrivateTargets: Bool) throws {
        guard text.utf8.count <= 2048 else { throw Refused(reason: "the URL is longer than 2048 bytes") }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == " " }),
            let components = URLComponents(string: text), let url = components.url
        else { throw Refused(reason: "the URL is not a valid absolute URL") }
        guard let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            throw Refused(reason: "the URL must be http or https")
        }
        guard components.user == nil, components.password == nil else {
            throw Refused(reason: "the URL must not carry a user name or password")
        }
        guard var host = components.host?.lowercased(), !host.isEmpty else { throw Refused(reason: "the URL has no host") }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if let port = components.port, !(1...65535).contains(port) { throw Refused(reason: "the URL's port is out of range") }
        if !allowPrivateTargets {
            if host == "localhost" || host.hasSuffix(".localhost") || host.hasSuffix(".localhost.") {
                throw Refused(reason: "the URL's host is loopback (localhost)")
            }
            if let address = IPAddress(host), let range = address.nonPublicRange {
                throw Refused(reason: "the URL's host is \(range)")
            }
        }
        self.url = url
        self.host = host
    }

    /// Whether every address a host resolved to may be called; the reason if one may not. All
    /// must pass, since the HTTP client may connect to any of them.
    public static func refusal(of addresses: [IPAddress], allowPrivateTargets: Bool) -> String? {
        if addresses.isEmpty { return "the host resolved to no address" }
        guard !allowPrivateTargets else { return nil }
        for address in addresses {
            if let range = address.nonPublicRange { return "the host resolves to \(address), which is \(range)" }
        }
        return nil
    }
}

import Crypto
import Foundation

/// The signature a webhook request carries, Stripe-style, so that a receiver can tell it came
/// from us and was not replayed later:
///
///     Bazaar-Signature: t=1764000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
///
/// `v1` is the lower-case hex HMAC-SHA256, keyed with the webhook's secret (its UTF-8 bytes, the
/// `whsec_` prefix included), of the timestamp, a dot and the exact body bytes: `"<t>.<body>"`.
/// A receiver recomputes it over the raw body it received, compares in constant time, and
/// rejects a timestamp too far from its own clock (five minutes, say), which makes a captured
/// request useless for a replay later.
public struct WebhookSignature: Sendable, Equatable {
    public static let headerName = "Bazaar-Signature"

    public var timestamp: Int
    public var mac: [UInt8]

    /// Signs `body` with `secret` at `timestamp` (seconds since 1970).
    public init(body: some DataProtocol, secret: String, timestamp: Int) {
        self.timestamp = timestamp
        self.mac = Array(HMAC<SHA256>.authenticationCode(for: Self.signedBytes(body, timestamp), using: Self.key(secret)))
    }

    init(timestamp: Int, mac: [UInt8]) {
        self.timestamp = timestamp
        self.mac = mac
    }

    /// The header's value: `t=<timestamp>,v1=<hex>`.
    public var headerValue: String {
        "t=\(timestamp),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// Reads a header value; nil if it is not of the form above.
    public init?(headerValue: String) {
        var timestamp: Int?
        var mac: [UInt8]?
        for part in headerValue.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { return nil }
            switch pair[0] {
            case "t": timestamp = Int(pair[1])
            case "v1": mac = Self.bytes(hex: pair[1])
            default: continue  // a later scheme (v2…) a receiver does not know yet
            }
        }
        guard let timestamp, let mac, mac.count == 32 else { return nil }
        self.init(timestamp: timestamp, mac: mac)
    }

    /// What a receiver does: true if `headerValue` signs `body` with `secret` and its timestamp
    /// is within `tolerance` seconds of `now`.
    public static func verify(
        _ headerValue: String, body: some DataProtocol, secret: String, now: Int, tolerance: Int = 300
    ) -> Bool {
        guard let signature = WebhookSignature(headerValue: headerValue), abs(now - signature.timestamp) <= tolerance else {
            return false
        }
        return HMAC<SHA256>.isValidAuthenticationCode(
            signature.mac, authenticating: signedBytes(body, signature.timestamp), using: key(secret))
    }

    /// A new secret for a webhook: `whsec_` and 32 random bytes in hex.
    public static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return "whsec_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    private static func key(_ secret: String) -> SymmetricKey { SymmetricKey(data: Array(secret.utf8)) }

    private static func signedBytes(_ body: some DataProtocol, _ timestamp: Int) -> [UInt8] {
        Array("\(timestamp).".utf8) + Array(body)
    }

    private static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

/// Where an order's payment stands.
public enum PaymentStatus: String, Sendable, Codable {
    case captured, refunded, declined
}

/// What payment does about one saga event.
public enum PaymentDecision: Sendable, Equatable {
    case capture
    case decline(reason: String)
    case refund
    /// The order was cancelled before any charge: remember it, so a late StockReserved charges nothing.
    case recordCancellation
    case ignore
}

/// Payment's rules, with no I/O.
///
/// On StockReserved: an order already cancelled, or already charged or declined, is left alone;
/// otherwise the account is charged if its balance covers the amount, else the charge is declined.
/// On OrderCancelled: a capture is refunded; no payment yet means the cancellation is recorded.
public enum PaymentRules {
    public static func onStockReserved(
        payment: PaymentStatus?, cancelled: Bool, balance: Int?, amount: Int
    ) -> PaymentDecision {
        guard payment == nil, !cancelled else { return .ignore }
        guard let balance else { return .decline(reason: "unknown_account") }
        return balance >= amount ? .capture : .decline(reason: "insufficient_funds")
    }

    public static func onOrderCancelled(payment: PaymentStatus?, cancelled: Bool) -> PaymentDecision {
        switch payment {
        case .captured: .refund
        case nil: cancelled ? .ignore : .recordCancellation
        case .refunded, .declined: .ignore
        }
    }
}

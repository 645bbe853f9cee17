"""Text of the Fernhill Analytics employee handbook, one entry per PDF page.

Kept as data so the PDF generator and the tests agree on which fact lives on
which page (tests assert page numbers in citations).
"""

TITLE = "Fernhill Analytics Employee Handbook"

# Each page: (section heading, paragraphs). Page numbers are 1-based list positions.
PAGES: list[tuple[str, list[str]]] = [
    (
        "Welcome to Fernhill Analytics",
        [
            "Fernhill Analytics builds forecasting software for regional energy "
            "utilities. We are 240 people across offices in Leeds, Utrecht and "
            "Porto, and about a third of us work fully remote.",
            "This handbook covers the policies every employee needs: human "
            "resources (pages 2 and 3) and IT and security (pages 4 and 5). The "
            "expense policy and the engineering on-call guide are published "
            "separately on the intranet.",
            "Questions about this handbook go to the People team at "
            "people@fernhill.example. The handbook is reviewed every January; "
            "this is edition 7, approved by the executive team on 14 January.",
        ],
    ),
    (
        "HR Policy: Time Off",
        [
            "Annual leave. Full-time employees receive 27 days of paid annual "
            "leave per calendar year, plus the public holidays of their office "
            "location. Part-time employees receive leave pro rata to their "
            "contracted hours.",
            "Carry-over. Up to 5 unused days of annual leave may be carried over "
            "into the next year; carried-over days expire on 31 March.",
            "Sick leave. If you are ill, tell your manager before 10:00 on the "
            "first day of absence. From the fourth consecutive day of sickness a "
            "doctor's note is required.",
            "Parental leave. Every parent, regardless of gender, receives 20 "
            "weeks of fully paid parental leave, to be taken within the first "
            "two years after the birth or adoption of a child.",
        ],
    ),
    (
        "HR Policy: Contracts, Contractors and Probation",
        [
            "Probation. New employees have a probation period of 6 months, with "
            "a review meeting with their manager at 3 months.",
            "Notice period. After probation the notice period is 2 months for "
            "both the employee and Fernhill Analytics.",
            "Contractors. Contractors do not accrue paid annual leave. They "
            "agree planned time off with their engagement manager at least 2 "
            "weeks in advance, and contractor invoices are paid within 30 days.",
            "Remote work. Employees may work from another country for up to 30 "
            "working days per year after approval from the People team.",
        ],
    ),
    (
        "IT and Security Policy: Accounts and Devices",
        [
            "Passwords. Passwords must be at least 14 characters long and stored "
            "in the company password manager, Bitwarden. Never reuse a work "
            "password on another site.",
            "Multi-factor authentication. MFA with a hardware security key is "
            "mandatory for email, source code hosting and the cloud consoles.",
            "Laptops. Company laptops use full-disk encryption and lock the "
            "screen after 5 minutes of inactivity. Lost or stolen laptops must be "
            "reported to the IT service desk within 1 hour.",
        ],
    ),
    (
        "IT and Security Policy: Incidents and Data",
        [
            "Phishing. Forward suspicious emails to security@fernhill.example "
            "and do not click links in them. The security team answers within "
            "one working day.",
            "Customer data. Customer meter data is classified Confidential. It "
            "may only be stored in the EU production region and must never be "
            "copied to laptops or personal storage.",
            "Access reviews. Managers review the access rights of their team "
            "every quarter; access for leavers is removed on their last working "
            "day.",
        ],
    ),
]

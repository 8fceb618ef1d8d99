"""The result codes of SPEC 6.10 with their zh and en texts, and the refusal that carries one.

Every refusal in the mobile payment room is ``Refused(code)`` (``n`` fills ``{n}`` of
3002/3009): the channels turn it into their reply (an SMS text, a JSON envelope) and never
invent texts of their own. A refusal is raised before anything but attempt counters was
written, so the transaction that raised it may commit (the counters must).
"""

from __future__ import annotations

HELP_TEXT = "指令有误。KT开户 CX余额 CXLS明细 CZK充值卡充值 HF缴话费 TX提现 XH销户 M重置密码"

TEXTS: dict[str, tuple[str, str]] = {
    "0000": ("成功", "OK"),
    "1001": ("请求格式有误", "Malformed"),
    "1002": ("签名或MAC校验失败", "Bad signature or MAC"),
    "1003": ("未登录或会话已过期", "Not authenticated"),
    "1004": ("无权进行此操作", "Not permitted"),
    "1005": ("请求编号重复", "Request id reused"),
    "1006": ("操作过于频繁,请稍后再试", "Rate limited"),
    "1007": ("请先修改初始登录密码", "Initial login password"),
    "2001": ("您的号码暂不能开通手机支付业务,详询10086。", "Not eligible"),
    "2002": ("您已开通手机支付,无需重复开户。", "Account exists"),
    "2003": ("您尚未开通手机支付,发送KT到10658888即可开通。", "No account"),
    "2004": ("您的账户已锁定,不能充值和消费。详询10086。", "Locked"),
    "2005": ("您的账户已冻结,详询10086。", "Frozen"),
    "2006": ("账户待销户,只能消费、提现或缴话费。", "Pending closure"),
    "2007": ("账户已销户。", "Closed"),
    "2008": ("您的号码状态异常,暂不能办理,详询10086。", "Number status"),
    "2009": ("非实名账户不能提现,请到营业厅补齐资料并升级实名。", "Real-name required"),
    "2010": ("您的资料不全,请携带本人身份证件到营业厅补齐资料。", "Data incomplete"),
    "2011": ("请先注销手机钱包。", "Wallet open"),
    "2012": ("账户余额不为零,不能销户。", "Balance not zero"),
    "2013": ("账户有在途资金或未完成交易,暂不能销户。", "Funds in transit"),
    "2014": ("您已是实名用户,无需升级。", "Already real-name"),
    "2015": ("该别名已被使用。", "Alias taken"),
    "3001": ("登录名或密码错误", "Wrong login name or password"),
    "3002": ("支付密码错误,还可输入{n}次。", "Wrong pay password, {n} tries left"),
    "3003": ("密码已锁定,24小时后自动解除,或拨打10086重置。", "Password locked"),
    "3004": ("初始支付密码须修改后方可使用,请登录网站或通过STK修改。", "Initial pay password"),
    "3005": ("密码格式有误或与原密码相同。", "Bad new password"),
    "3006": ("验证码错误或已失效。", "Bad OTP"),
    "3007": ("身份验证未通过,不能重置密码。", "Identity check failed"),
    "3008": ("今日密保问题已错3次,请拨打10086人工服务。", "Attempts used"),
    "3009": ("操作密码错误,还可输入{n}次。", "Wrong operation password, {n} tries left"),
    "4001": ("金额或日期有误。", "Bad amount or date"),
    "4002": ("余额不足,操作未成功。", "Insufficient"),
    "4004": ("连续提现次数超限", "Consecutive withdrawals"),
    "4005": ("请先登录手机支付网站设定提现银行卡。", "No card"),
    "4006": ("本月绑定银行卡次数已满3次。", "Bindings used"),
    "4007": ("银行卡户名须与手机支付账户户名一致。", "Name mismatch"),
    "4008": ("有未完成的提现,暂不能更换银行卡。", "Withdrawal open"),
    "4009": ("被缴费号码不是中国移动号码。", "Not China Mobile"),
    "4010": ("暂不支持向该省号码缴话费。", "Province blocked"),
    "4011": ("订单不存在或状态不允许此操作。", "Order state"),
    "4015": ("退款功能暂未开放,请与商户协商线下退款。", "Refunds disabled"),
    "4016": ("退款金额超过可退金额。", "Refund too large"),
    "4017": ("商户账户余额不足。", "Merchant short"),
    "5001": ("钱包未开通或已注销。", "Wallet not open"),
    "5002": ("钱包已暂停,不能充值和消费。", "Wallet paused"),
    "5003": ("钱包余额将超过上限1000元。", "Wallet cap"),
    "5004": ("今日空中充值已达5次或500元。", "Daily air limit"),
    "5005": ("钱包余额不为零,不能通过STK注销。", "Wallet not empty"),
    "5006": ("有未完成的钱包充值,请稍后再试。", "Load in progress"),
    "5007": ("卡片与钱包不符。", "Wrong card"),
    "5008": ("卡片校验失败。", "Bad cryptogram"),
    "5009": ("交易已上送,请做退货。", "Use return"),
    "5010": ("交易未上送,请做撤销。", "Use void"),
    "5011": ("重复交易。", "Duplicate"),
    "5012": ("该手机型号不支持RFID-SIM卡。", "Handset blacklisted"),
    "6001": ("充值卡密码有误,请核对后重发。", "Bad PIN"),
    "6002": ("该充值卡已使用。", "Card used"),
    "6003": ("该充值卡已过期。", "Expired"),
    "6004": ("暂仅支持湖南移动充值卡。", "Province not accepted"),
    "6005": ("充值卡密码错误次数过多,请24小时后再试。", "PIN failures"),
    "6006": ("充值卡充值暂停服务,请稍后再试。", "Paused"),
    "7001": ("没有待确认的操作,请重新发送指令。", "No dialogue"),
    "7002": (HELP_TEXT, "Unknown command"),
    "7003": ("日期有误,请回复8位日期,如20091101。", "Bad date"),
    "9001": ("系统繁忙,请稍后再试。", "Busy"),
    "9002": ("系统错误。", "Internal"),
}


def zh(code: str, n: int | None = None) -> str:
    text = TEXTS[code][0]
    return text.replace("{n}", str(n)) if n is not None else text


def en(code: str, n: int | None = None) -> str:
    text = TEXTS[code][1]
    return text.replace("{n}", str(n)) if n is not None else text


class Refused(Exception):
    """A business refusal with its SPEC 6.10 code (``n``: tries left for 3002/3009)."""

    def __init__(self, code: str, n: int | None = None) -> None:
        if code not in TEXTS:
            raise ValueError(f"unknown result code {code}")
        super().__init__(code)
        self.code = code
        self.n = n

    @property
    def zh(self) -> str:
        return zh(self.code, self.n)

    @property
    def en(self) -> str:
        return en(self.code, self.n)

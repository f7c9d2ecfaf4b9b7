"""What the sample data is made of: institutions, departments, diagnoses and the items billed.

Codes follow the national formats (service items: 15 digits starting ``00``; western drugs:
23 characters starting ``X``; patent drugs: 20 starting ``Z``; consumables: 27 starting ``C``).
Service-item and restricted-drug codes are real national codes taken from the knowledge
batches (so the sample rule library in ``rules/`` can name them); the everyday drugs and
consumables have well-formed codes with plausible names. Each western drug has its own
generic group (the first 10 characters), so the clean data never holds two drugs of one
ingredient on a day.

Prices are in fen (分). Service items are priced by institution level (level 3 the base price,
level 2 90%, level 1 and below 80%); drugs and consumables cost the same everywhere. The
``hilist`` table written with a batch gives exactly these prices as the caps, so clean lines
are never above a cap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    code: str
    name: str
    list_type: str  # 101 drugs, 102 herbal, 201 service items, 301 consumables
    chrg: str  # med_chrgitm_type
    price: int  # fen, at level 3 (service items) or everywhere (drugs, consumables)
    lv: str = "01"  # chrgitm_lv: 01 A, 02 B, 03 C

    def price_at(self, level: int) -> int:
        if self.list_type != "201":
            return self.price
        return {3: self.price, 2: self.price * 9 // 10}.get(level, self.price * 8 // 10)


def _svc(code, name, chrg, price, lv="01"):
    return Item(code, name, "201", chrg, price, lv)


def _drug(code, name, price, lv="01"):
    return Item(code, name, "101", "11" if code.startswith("Z") else "09", price, lv)


def _cons(code, name, price, lv="02"):
    assert len(code) == 27, code
    return Item(code, name, "301", "08", price, lv)


ITEMS: list[Item] = [
    # bed, nursing, consultation (national batch 8-1 daily limits apply to most of these)
    _svc("001109000010000", "普通病房床位费", "01", 4000),
    _svc("001201000030000", "Ⅰ级护理", "07", 3000),
    _svc("001201000040000", "Ⅱ级护理", "07", 2000),
    _svc("001201000070000", "新生儿护理", "07", 3000),
    _svc("001102000050000", "住院诊查费", "02", 1500),
    _svc("001102000010000", "普通门诊诊查费", "02", 1000),
    _svc("001102000030000", "急诊诊查费", "02", 1500),
    _svc("001103000010000", "急诊监护费", "02", 10000),
    _svc("003107010220000", "心电监测", "05", 500),  # per hour, at most 24 a day
    _svc("003107020020000", "持续有创性血压监测", "05", 800),
    _svc("001204000050000", "静脉输液", "05", 800),
    # labs and examinations
    _svc("002503010010000", "血常规", "04", 2000),
    _svc("002501010010000", "尿常规检查", "04", 1000),
    _svc("002503030010000", "丙氨酸氨基转移酶测定", "04", 800),
    _svc("002503020010000", "血清葡萄糖测定", "04", 600),
    _svc("002503020150000", "血清肌酐测定", "04", 800),
    _svc("002503050060000", "C反应蛋白测定", "04", 3000),
    _svc("002503020030000", "糖化血红蛋白测定", "04", 6000),
    _svc("002101010010000", "胸部X线摄影", "03", 6000),
    _svc("002202000010000", "常规心电图检查", "03", 2500),
    _svc("002201020010000", "彩色多普勒超声检查", "03", 15000),
    # items restricted by gender / age in national batch 1 and 8-2
    _svc("002101030300000", "子宫造影", "03", 18000),
    _svc("002501040040000", "精液常规检查", "04", 3000),
    _svc("001302000010000", "儿童龋齿预防保健", "05", 3000),
    _svc("001301000010000", "婴幼儿健康体检", "03", 5000),
    _svc("003402000320000", "职业功能训练", "05", 4000),
    # surgery (national batch 7: a radical operation includes the partial ones)
    _svc("003303000120000", "甲状腺癌扩大根治术", "06", 300000),
    _svc("003303000100000", "甲状腺全切术", "06", 180000),
    _svc("003311000110000", "白内障超声乳化摘除术", "06", 150000),
    # 肝胆手术组 of national batch 2 (主次手术: a second operation through one incision at 50%)
    _svc("003310060110000", "胆总管探查T管引流术", "06", 160000),
    _svc("003310060020000", "胆囊切除术", "06", 120000),
    _svc("003310030080000", "肠粘连松解术", "06", 90000),
    # everyday western drugs (distinct generic groups)
    _drug("XJ01CAA040E001010101958", "阿莫西林胶囊", 1250),
    _drug("XJ01DCT073B001010104040", "注射用头孢呋辛钠", 2380),
    _drug("XJ01MAZ051B002010101439", "左氧氟沙星氯化钠注射液", 3150),
    _drug("XB05XAL045B002010109234", "氯化钠注射液", 450),
    _drug("XB05BAP020B002010100399", "葡萄糖注射液", 520),
    _drug("XA10BAE012A001010101563", "盐酸二甲双胍片", 1860),
    _drug("XC08CAX147A010010101779", "硝苯地平控释片", 3320),
    _drug("XC10AAA128A001010100977", "阿托伐他汀钙片", 2890, "02"),
    _drug("XA02BCA211E001010102446", "奥美拉唑肠溶胶囊", 1540),
    _drug("XM01AEB090E008010103174", "布洛芬缓释胶囊", 1120),
    _drug("XR05CBA102B002010100431", "盐酸氨溴索注射液", 1680, "02"),
    _drug("XB01ACA056A001010100612", "阿司匹林肠溶片", 1590),
    _drug("ZA12BAF0123010102301", "复方丹参滴丸", 2650),
    _drug("ZA01BAL0384020101445", "连花清瘟胶囊", 2480, "02"),
    # restricted drugs (real codes from national batches 1, 3, 4, 5)
    _drug("ZA04CAE0023010100166", "儿童清肺口服液", 3560, "02"),
    _drug("ZH01AAB0066010100716", "疤痕止痒软化膏", 4200, "02"),
    _drug("XB05BAU012B002010102180", "ω-3甘油三酯(2%)中/长链脂肪乳/氨基酸(16)/葡萄糖(36%)注射液", 28600, "02"),
    _drug("ZA05CAC0029010102312", "参附注射液", 6120, "02"),
    _drug("ZC01AAA0042010105549", "艾迪注射液", 5280, "02"),
    # course-limited drug (national batch 6: 丁苯酞氯化钠注射液 paid for at most 14 days)
    _drug("XN07XXD221B002010102774", "丁苯酞氯化钠注射液", 17800, "02"),
    # a second maker's amoxicillin (same generic group as the one above: never billed beside it
    # in the clean data) and glucosamine, delisted from the national catalogue in 2019 (its
    # hilist row is written as expired only by the not_in_catalog injector)
    _drug("XJ01CAA040E001010204417", "阿莫西林胶囊", 860),
    _drug("XM01AXA079E001010100528", "盐酸氨基葡萄糖胶囊", 3980),
    # class C (fully self-paid)
    Item("T000700420", "西洋参", "102", "10", 3800, "03"),
    # consumables
    _cons("C14020112000000004010000001", "一次性使用输液器", 350),
    _cons("C14030107000000012010000002", "一次性使用无菌注射器", 120),
    _cons("C02010309000000001510000003", "医用脱脂纱布敷料", 680),
]

BY_CODE: dict[str, Item] = {i.code: i for i in ITEMS}

# Named codes used by the generator and the injectors.
BED = "001109000010000"
NURSE_1 = "001201000030000"
NURSE_2 = "001201000040000"
NURSE_NEONATE = "001201000070000"
IPT_CONSULT = "001102000050000"
OPT_CONSULT = "001102000010000"
ER_CONSULT = "001102000030000"
ER_MONITOR = "001103000010000"
ECG_MONITOR = "003107010220000"
IBP_MONITOR = "003107020020000"
INFUSION = "001204000050000"
INFUSION_SET = "C14020112000000004010000001"
SYRINGE = "C14030107000000012010000002"
GAUZE = "C02010309000000001510000003"
BLOOD_ROUTINE = "002503010010000"
HBA1C = "002503020030000"
HYSTEROGRAPHY = "002101030300000"  # 子宫造影, women only
SEMEN_ROUTINE = "002501040040000"  # 精液常规检查, men only
CHILD_DENTAL = "001302000010000"  # 儿童龋齿预防保健, under 18
INFANT_CHECKUP = "001301000010000"  # 婴幼儿健康体检, under 3
WORK_TRAINING = "003402000320000"  # 职业功能训练, 16 to 60
THYROID_RADICAL = "003303000120000"
THYROID_TOTAL = "003303000100000"
CATARACT = "003311000110000"
SCAR_CREAM = "ZH01AAB0066010100716"  # 工伤 only
PARENTERAL = "XB05BAU012B002010102180"  # inpatients only
SHENFU = "ZA05CAC0029010102312"  # level 2 and above
AIDI = "ZC01AAA0042010105549"  # cancer patients, level 2 and above
CHILD_SYRUP = "ZA04CAE0023010100166"  # 儿童清肺口服液, children only
HERB_C = "T000700420"
CBD_EXPLORE = "003310060110000"  # 胆总管探查T管引流术
CHOLECYSTECTOMY = "003310060020000"  # 胆囊切除术
ADHESIOLYSIS = "003310030080000"  # 肠粘连松解术
BUTYLPHTHALIDE = "XN07XXD221B002010102774"  # 丁苯酞氯化钠注射液, 14 days
AMOXICILLIN = "XJ01CAA040E001010101958"
AMOXICILLIN_B = "XJ01CAA040E001010204417"  # another maker, same generic group
GLUCOSAMINE = "XM01AXA079E001010100528"  # delisted

LABS = [
    "002503010010000",
    "002501010010000",
    "002503030010000",
    "002503020010000",
    "002503020150000",
    "002503050060000",
]
EXAMS = ["002101010010000", "002202000010000", "002201020010000"]
IPT_DRUGS = [
    "XJ01DCT073B001010104040",
    "XJ01MAZ051B002010101439",
    "XB05XAL045B002010109234",
    "XB05BAP020B002010100399",
    "XR05CBA102B002010100431",
    "XA02BCA211E001010102446",
]
ORAL_DRUGS = [
    "XJ01CAA040E001010101958",
    "XA10BAE012A001010101563",
    "XC08CAX147A010010101779",
    "XC10AAA128A001010100977",
    "XA02BCA211E001010102446",
    "XM01AEB090E008010103174",
    "XB01ACA056A001010100612",
    "ZA12BAF0123010102301",
    "ZA01BAL0384020101445",
]

# Institutions: (code, name, hosp_lv). Levels 3, 2 and 1 (hosp_lv 01-04/12, 05-07/13, 08-10/14).
INSTITUTIONS = [
    ("H33010200011", "示例市第一人民医院", "01"),
    ("H33010200027", "示例市中医院", "03"),
    ("H33010300014", "示例区人民医院", "05"),
    ("H33010300030", "示例区第二医院", "06"),
    ("H33010400012", "示例县人民医院", "13"),
    ("H33010500019", "东湖街道社区卫生服务中心", "08"),
    ("H33010500025", "西山镇卫生院", "09"),
    ("H33010500031", "南桥社区卫生服务站", "14"),
]
INST_WEIGHTS = [0.2, 0.12, 0.15, 0.13, 0.12, 0.1, 0.1, 0.08]

# Departments (national department codes).
DEPTS = {
    "A03": "内科",
    "A04": "外科",
    "A05": "妇产科",
    "A07": "儿科",
    "A12": "口腔科",
    "A19": "肿瘤科",
    "A21": "康复医学科",
    "A20": "急诊医学科",
    "A02": "全科医疗科",
}

# Diagnoses: code -> (name, department)
DIAG = {
    "J18.900": ("肺炎", "A03"),
    "J06.900": ("急性上呼吸道感染", "A03"),
    "I10.x00": ("特发性(原发性)高血压", "A03"),
    "E11.900": ("2型糖尿病不伴有并发症", "A03"),
    "K29.700": ("胃炎", "A03"),
    "I63.900": ("脑梗死", "A03"),
    "I25.103": ("冠状动脉粥样硬化性心脏病", "A03"),
    "M54.500": ("下背痛", "A21"),
    "C34.900": ("肺恶性肿瘤", "A19"),
    "S82.200": ("胫骨干骨折", "A04"),
    "S61.900": ("腕和手开放性伤口", "A04"),
    "H25.900": ("老年性白内障", "A04"),
    "N40.x00": ("前列腺增生", "A04"),
    "N92.000": ("月经过多和频繁伴有规则周期", "A05"),
    "N76.000": ("急性阴道炎", "A05"),
    "P59.900": ("新生儿黄疸", "A07"),
    "Z00.100": ("常规儿童健康检查", "A07"),
    "K02.900": ("龋病", "A12"),
    "K52.900": ("非感染性胃肠炎和结肠炎", "A03"),
    # never drawn by the clean data: the peer groups the overtreatment injector builds
    "R51.x00": ("头痛", "A03"),
    "R50.900": ("发热", "A03"),
}

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"

"""The tiny agreement GPT-2's grammar: lexicon, held-out pairs and a sentence generator.

English-like sentences in which a verb agrees in number with its subject, built so that no
positional shortcut solves agreement (see shared/FINDINGS.md, last section):

- the subject stands at varying places: fronted adverbials ("Yesterday, the cat ..."), fronted
  prepositional phrases with an animate noun ("Near the dogs, the cat ..."), adverbial clauses
  with their own agreement ("When the dogs see the birds, the cat ..."), embedding clauses
  ("I think that the cat ...", "The dogs say that the cat ...");
- attractors between subject and verb: one or two prepositional phrases, object relative
  clauses ("the cat that the dogs like"), subject relative clauses whose nearest noun is the
  object ("the cat that likes the dogs"), PPs inside relative clauses; attractors are drawn from
  the same animate nouns as subjects, so noun identity does not tell subject from attractor;
- optional adjectives in every noun phrase and adverbs before the verb, so that no fixed offset
  from the verb finds the subject;
- past-tense filler sentences in which nothing agrees;
- held-out (noun, verb) pairs: a noun never governs that verb anywhere in the corpus (main
  clause, relative clause, adverbial or embedding clause), so test items on those pairs are new.

Every word is a single token of the trained ByteLevel BPE (closed vocabulary), verb forms with
their leading space included. The generator is deterministic for a given `random.Random`.
"""
from __future__ import annotations

import random

# (singular, plural) animate nouns: subjects, attractors, objects.
NOUNS = [
    ("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("horse", "horses"),
    ("teacher", "teachers"), ("doctor", "doctors"), ("farmer", "farmers"), ("pilot", "pilots"),
    ("student", "students"), ("singer", "singers"), ("dancer", "dancers"), ("lawyer", "lawyers"),
    ("nurse", "nurses"), ("baker", "bakers"), ("driver", "drivers"), ("writer", "writers"),
    ("artist", "artists"), ("author", "authors"), ("guard", "guards"), ("officer", "officers"),
    ("senator", "senators"), ("judge", "judges"), ("manager", "managers"), ("player", "players"),
    ("athlete", "athletes"), ("surgeon", "surgeons"), ("painter", "painters"), ("clerk", "clerks"),
    ("banker", "bankers"), ("soldier", "soldiers"), ("sailor", "sailors"), ("king", "kings"),
    ("queen", "queens"), ("boy", "boys"), ("girl", "girls"), ("friend", "friends"),
    ("neighbor", "neighbors"), ("parent", "parents"), ("customer", "customers"),
    ("child", "children"), ("man", "men"), ("woman", "women"), ("mouse", "mice"),
    ("goose", "geese"), ("person", "people"), ("wolf", "wolves"), ("fox", "foxes"),
    ("lion", "lions"), ("tiger", "tigers"), ("rabbit", "rabbits"), ("monkey", "monkeys"),
    ("chef", "chefs"), ("poet", "poets"), ("actor", "actors"), ("uncle", "uncles"),
    ("cousin", "cousins"), ("visitor", "visitors"), ("guest", "guests"), ("hunter", "hunters"),
    ("thief", "thieves"),
]
# (singular, plural) inanimate nouns: objects and PP nouns only.
THINGS = [
    ("table", "tables"), ("car", "cars"), ("house", "houses"), ("tree", "trees"),
    ("box", "boxes"), ("door", "doors"), ("window", "windows"), ("bridge", "bridges"),
    ("river", "rivers"), ("garden", "gardens"), ("building", "buildings"), ("wall", "walls"),
    ("fence", "fences"), ("tower", "towers"), ("lamp", "lamps"), ("chair", "chairs"),
    ("road", "roads"), ("shop", "shops"), ("school", "schools"), ("park", "parks"),
]
PREPOSITIONS = ["near", "behind", "beside", "with", "from", "above", "below", "under",
                "beyond", "around", "outside", "inside"]
# (singular, plural, past) transitive verbs: main verbs and relative-clause verbs.
TRANSITIVE = [
    ("likes", "like", "liked"), ("sees", "see", "saw"), ("helps", "help", "helped"),
    ("knows", "know", "knew"), ("admires", "admire", "admired"), ("follows", "follow", "followed"),
    ("watches", "watch", "watched"), ("loves", "love", "loved"), ("hates", "hate", "hated"),
    ("meets", "meet", "met"), ("finds", "find", "found"), ("calls", "call", "called"),
    ("visits", "visit", "visited"), ("trusts", "trust", "trusted"), ("thanks", "thank", "thanked"),
    ("blames", "blame", "blamed"), ("greets", "greet", "greeted"), ("avoids", "avoid", "avoided"),
    ("chases", "chase", "chased"), ("praises", "praise", "praised"), ("has", "have", "had"),
]
# (singular, plural, past) verbs followed by an adjective.
COPULAS = [("is", "are", "was"), ("seems", "seem", "seemed"), ("looks", "look", "looked"),
           ("was", "were", "was")]
# (singular, plural, past) intransitive verbs.
INTRANSITIVE = [
    ("sleeps", "sleep", "slept"), ("smiles", "smile", "smiled"), ("laughs", "laugh", "laughed"),
    ("runs", "run", "ran"), ("waits", "wait", "waited"), ("swims", "swim", "swam"),
    ("works", "work", "worked"), ("sings", "sing", "sang"),
]
# (singular, plural) verbs that embed a clause: "The dogs say that ...".
SAY_VERBS = [("says", "say"), ("thinks", "think"), ("believes", "believe"), ("hopes", "hope")]
ADJECTIVES = ["happy", "tired", "young", "old", "angry", "busy", "quiet", "brave", "kind",
              "tall", "late", "ready"]
PRE_VERB_ADVERBS = ["often", "never", "always", "also", "still", "rarely"]
ADVERBS = ["today", "again", "often", "here", "quickly", "slowly", "now", "there"]
FRONTED_ADVERBIALS = [["yesterday"], ["today"], ["sometimes"], ["in", "the", "morning"],
                      ["at", "night"], ["after", "the", "storm"], ["of", "course"]]
EMBEDDERS = [["i", "think", "that"], ["we", "know", "that"], ["everyone", "says", "that"],
             ["it", "seems", "that"], ["you", "know", "that"]]

MAIN_VERBS = TRANSITIVE + COPULAS + INTRANSITIVE  # every verb a main clause may agree on
# The four families of the agreement datasets use these verbs as answers.
FAMILY_MAIN_VERBS = [(s, p) for s, p, _ in MAIN_VERBS]
FAMILY_RC_VERBS = [(s, p) for s, p, _ in TRANSITIVE]

HELDOUT_FRACTION = 0.2
# Share of object relative clauses with a PP inside ("the cat that the dogs near the bird
# like"). At 0.25 a 4-layer model trained for 1000 steps follows the PP noun in
# hard_within_rc (76% held out); at 0.5 with 2000 steps it does not (the committed recipe,
# see datasets/tiny-gpt2/CARD.md).
RC_PP = 0.5


def heldout_pairs(seed: int = 0) -> set[tuple[str, str]]:
    """(noun singular, verb singular) pairs never seen agreeing in the corpus.

    A fixed random fifth of all noun × verb pairs, drawn by `seed` (the grammar's, not the
    model's); every noun and every verb keeps most of its pairs for training.
    """
    rng = random.Random(f"heldout-{seed}")
    pairs = set()
    for noun, _ in NOUNS:
        for verb, _, _ in MAIN_VERBS + [(s, p, "") for s, p in SAY_VERBS]:
            if rng.random() < HELDOUT_FRACTION:
                pairs.add((noun, verb))
    return pairs


class Generator:
    """Draws sentences (lists of lower-case words) from the grammar."""

    def __init__(self, rng: random.Random, heldout: set[tuple[str, str]],
                 rc_pp: float = RC_PP):
        self.rng = rng
        self.heldout = heldout
        self.rc_pp = rc_pp

    # -- small pieces --------------------------------------------------------------------
    def number(self) -> int:
        return self.rng.randrange(2)  # 0 singular, 1 plural

    def noun(self, animate: bool = True) -> tuple[str, int, list[str]]:
        """(singular lemma, number, ["the", (adjectives,) form]).

        Optional adjectives vary the distance between words, so that no fixed offset finds
        the subject.
        """
        pool = NOUNS if animate or self.rng.random() < 0.5 else THINGS
        sg, pl = self.rng.choice(pool)
        n = self.number()
        words = ["the"]
        while self.rng.random() < 0.25 and len(words) < 3:
            words.append(self.rng.choice(ADJECTIVES))
        return sg, n, words + [(sg, pl)[n]]

    def agreeing(self, lemma: str, n: int, verbs) -> tuple[str, ...]:
        """A verb from `verbs` whose pair with noun `lemma` is not held out, and its form."""
        while True:
            verb = self.rng.choice(verbs)
            if (lemma, verb[0]) not in self.heldout:
                return verb[n]

    def pp(self) -> list[str]:
        _, _, words = self.noun(animate=self.rng.random() < 0.6)
        return [self.rng.choice(PREPOSITIONS)] + words

    def obj(self) -> list[str]:
        _, _, words = self.noun(animate=self.rng.random() < 0.5)
        if self.rng.random() < 0.2:
            words += self.pp()
        return words

    # -- phrases -------------------------------------------------------------------------
    def subject(self) -> tuple[str, int, list[str]]:
        """A subject noun phrase with attractors: (lemma, number, words)."""
        lemma, n, words = self.noun()
        r = self.rng.random()
        if r < 0.30:
            pass
        elif r < 0.52:
            words += self.pp()
        elif r < 0.60:
            words += self.pp() + self.pp()
        elif r < 0.80:  # object relative clause: the cat that the dogs (near the X) like
            a_lemma, a_n, a_words = self.noun()
            if self.rng.random() < self.rc_pp:  # PP inside the RC: its noun is not the subject
                a_words += self.pp()
            words += ["that"] + a_words + [self.agreeing(a_lemma, a_n, TRANSITIVE)]
        else:  # subject relative clause: the cat that likes the dogs (near the X)
            words += ["that", self.agreeing(lemma, n, TRANSITIVE)] + self.obj()
        return lemma, n, words

    def clause(self) -> list[str]:
        """subject + (adverb) + agreeing main verb + continuation."""
        lemma, n, words = self.subject()
        if self.rng.random() < 0.15:
            words.append(self.rng.choice(PRE_VERB_ADVERBS))
        r = self.rng.random()
        if r < 0.6:
            words += [self.agreeing(lemma, n, TRANSITIVE)] + self.obj()
        elif r < 0.8:
            words += [self.agreeing(lemma, n, COPULAS), self.rng.choice(ADJECTIVES)]
        else:
            words.append(self.agreeing(lemma, n, INTRANSITIVE))
            if self.rng.random() < 0.5:
                words.append(self.rng.choice(ADVERBS))
        return words

    def front(self) -> list[str]:
        """Something before the subject: nothing, an adverbial, a clause, an embedding."""
        r = self.rng.random()
        if r < 0.40:
            return []
        if r < 0.52:
            return self.rng.choice(FRONTED_ADVERBIALS) + [","]
        if r < 0.62:  # fronted PP with an animate attractor
            return [self.rng.choice(PREPOSITIONS)] + self.noun()[2] + [","]
        if r < 0.72:  # adverbial clause with its own agreement
            a_lemma, a_n, a_words = self.noun()
            return (["when"] + a_words + [self.agreeing(a_lemma, a_n, TRANSITIVE)]
                    + self.noun(animate=False)[2] + [","])
        if r < 0.84:
            return list(self.rng.choice(EMBEDDERS))
        # embedding clause whose own subject agrees: the dogs (near the X) say that ...
        a_lemma, a_n, a_words = self.noun()
        if self.rng.random() < 0.3:
            a_words += self.pp()
        return a_words + [self.agreeing(a_lemma, a_n, SAY_VERBS), "that"]

    def context(self) -> list[str]:
        """A fronted phrase or clause with at least one animate noun, put in front of an
        agreement prefix to make the harder "context" test variants."""
        r = self.rng.random()
        if r < 1 / 3:
            return [self.rng.choice(PREPOSITIONS)] + self.noun()[2] + [","]
        if r < 2 / 3:
            a_lemma, a_n, a_words = self.noun()
            return a_words + [self.agreeing(a_lemma, a_n, SAY_VERBS), "that"]
        a_lemma, a_n, a_words = self.noun()
        return (["when"] + a_words + [self.agreeing(a_lemma, a_n, TRANSITIVE)]
                + self.noun()[2] + [","])

    def filler(self) -> list[str]:
        """A past-tense sentence: nothing agrees."""
        words = self.noun()[2]
        if self.rng.random() < 0.3:
            words += self.pp()
        r = self.rng.random()
        if r < 0.6:
            words += [self.rng.choice(TRANSITIVE)[2]] + self.obj()
        elif r < 0.8:
            words += [self.rng.choice(COPULAS)[2], self.rng.choice(ADJECTIVES)]
        else:
            words += [self.rng.choice(INTRANSITIVE)[2]]
        return words

    def sentence(self) -> str:
        words = self.filler() if self.rng.random() < 0.08 else self.front() + self.clause()
        return render(words)


def render(words: list[str]) -> str:
    """Words → sentence text: capitalised, commas attached, a final full stop."""
    text = " ".join(words).replace(" ,", ",") + "."
    return text[0].upper() + text[1:]


def word_lists(heldout: set[tuple[str, str]]) -> dict:
    """The grammar's word lists in the format of datasets/agreement/*.json (make_agreement.py)."""
    return {
        "description": "Word lists of the tiny agreement GPT-2's grammar (scripts/sva_grammar.py). "
                       "Test items are exactly those whose (subject, verb) pair is held out.",
        "nouns": [list(p) for p in NOUNS],
        "attractors": [list(p) for p in NOUNS],
        "prepositions": PREPOSITIONS,
        "verbs": [list(p) for p in FAMILY_MAIN_VERBS],
        "rc_verbs": [list(p) for p in FAMILY_RC_VERBS],
        "templates": {
            "simple": "The {subj}",
            "across_pp": "The {subj} {prep} the {attr}",
            "within_rc": "The {attr} that the {subj}",
            "across_rc": "The {subj} that the {attr} {attr_verb}",
        },
        "heldout_pairs": sorted([list(p) for p in heldout]),
    }


# -- the "hard" held-out test families ------------------------------------------------------
# Marks et al.'s four templates put the subject at a fixed distance from the verb slot, so
# attention that picks a noun by relative position (one layer is enough) solves them. The hard
# families vary that distance and where the attractors stand, using only structures the corpus
# grammar above generates: 0-2 adjectives on every noun, one or two PPs, PPs inside relative
# clauses, a pre-verb adverb, and fronted phrases or clauses of every kind `front` draws. All
# attractors of an item (fronted nouns included) share one number, so one of its two rows has
# every other noun disagreeing with the subject.
#
# `hard_long` was designed after seeing where a 1-layer control trained on this grammar still
# fails (datasets/tiny-gpt2/CARD.md): it keeps only the longest material the grammar puts
# between subject and verb, always with the pre-verb adverb: two PPs + adverb, or an object
# relative clause with a PP inside + adverb ("the cat near the old dogs beside the birds often",
# "the cat that the dogs near the birds like still"), behind the same fronted material. The
# subject and the verb slot then have 7-12 words between them, among them two
# attractors and, in the relative clause, a verb that agrees with one of them: no fixed
# offset, nearest noun or nearest agreeing verb finds the subject, only the structure does. Two
# pre-verb adverbs in a row are not in the grammar, nor a PP and a relative clause on one
# subject, so they are left out. Subject relative clauses ("the cat that likes the dogs near
# the birds") are left out too: their verb agrees with the subject, a cue that needs no
# structure.
HARD_FAMILIES = ("hard_simple", "hard_across_pp", "hard_within_rc", "hard_across_rc",
                 "hard_long")


class HardItems:
    """Draws hard test items on held-out (subject, verb) pairs.

    `item(family)` returns (words, subject index, subject pair, verb pair, attractor number):
    the prefix's words with None where the subject's form goes.
    """

    def __init__(self, rng: random.Random, heldout: set[tuple[str, str]]):
        self.rng = rng
        self.gen = Generator(rng, heldout)
        main = {v[0]: v for v in MAIN_VERBS}
        rc = {v[0]: v for v in TRANSITIVE}
        nouns = dict(NOUNS)
        self.main_pairs = sorted((n, v) for n, v in heldout if v in main)
        self.rc_pairs = sorted((n, v) for n, v in heldout if v in rc)
        self.nouns, self.main, self.rc = nouns, main, rc

    def np_(self, n: int, avoid: str, animate: bool = True) -> tuple[str, list[str]]:
        """(lemma, ["the", 0-2 adjectives, form]) of number n, lemma != avoid."""
        pool = NOUNS if animate else THINGS
        while True:
            sg, pl = self.rng.choice(pool)
            if sg != avoid:
                break
        adjectives = self.rng.sample(ADJECTIVES, self.rng.randrange(3))
        return sg, ["the"] + adjectives + [(sg, pl)[n]]

    def pp(self, n: int, avoid: str) -> list[str]:
        return [self.rng.choice(PREPOSITIONS)] + self.np_(n, avoid)[1]

    def front(self, n: int, avoid: str) -> list[str]:
        """Nothing, or a fronted phrase or clause as `Generator.front` makes them; its nouns
        have number n."""
        r = self.rng.randrange(6)
        if r == 0:
            return []
        if r == 1:
            return self.rng.choice(FRONTED_ADVERBIALS) + [","]
        if r == 2:
            return [self.rng.choice(PREPOSITIONS)] + self.np_(n, avoid)[1] + [","]
        if r == 3:
            lemma, words = self.np_(n, avoid)
            obj = self.np_(n, avoid, animate=self.rng.random() < 0.5)[1]
            return ["when"] + words + [self.gen.agreeing(lemma, n, TRANSITIVE)] + obj + [","]
        if r == 4:
            return list(self.rng.choice(EMBEDDERS))
        lemma, words = self.np_(n, avoid)
        if self.rng.random() < 0.3:
            words += self.pp(n, avoid)
        return words + [self.gen.agreeing(lemma, n, SAY_VERBS), "that"]

    def item(self, family: str):
        pairs = self.rc_pairs if family == "hard_within_rc" else self.main_pairs
        lemma, verb = self.rng.choice(pairs)
        subj = (lemma, self.nouns[lemma])
        verb_pair = (self.rc if family == "hard_within_rc" else self.main)[verb][:2]
        a = self.rng.randrange(2)  # the attractors' number
        words = self.front(a, lemma)
        if family == "hard_within_rc":  # the HEAD that the SUBJ (PP) -> RC verb
            words += self.np_(a, lemma)[1] + ["that"]
        words += ["the"] + self.rng.sample(ADJECTIVES, self.rng.randrange(3))
        index = len(words)
        words.append(None)
        if family == "hard_across_pp":
            words += self.pp(a, lemma)
            if self.rng.random() < 0.5:
                words += self.pp(a, lemma)
        elif family == "hard_within_rc":
            if self.rng.random() < 0.7:
                words += self.pp(a, lemma)
        elif family == "hard_across_rc":  # the SUBJ that the ATTR (PP) verb
            a_lemma, a_words = self.np_(a, lemma)
            if self.rng.random() < 0.5:
                a_words += self.pp(a, lemma)
            words += ["that"] + a_words + [self.gen.agreeing(a_lemma, a, TRANSITIVE)]
        elif family == "hard_long":  # two PPs, or an object RC with a PP inside; an adverb
            if self.rng.random() < 0.5:
                words += self.pp(a, lemma) + self.pp(a, lemma)
            else:
                a_lemma, a_words = self.np_(a, lemma)
                words += (["that"] + a_words + self.pp(a, lemma)
                          + [self.gen.agreeing(a_lemma, a, TRANSITIVE)])
            return words + [self.rng.choice(PRE_VERB_ADVERBS)], index, subj, verb_pair, a
        if family != "hard_within_rc" and self.rng.random() < 0.3:
            words.append(self.rng.choice(PRE_VERB_ADVERBS))
        return words, index, subj, verb_pair, a


def render_prefix(words: list[str]) -> str:
    """Prefix words → text: capitalised, commas attached, no full stop."""
    return render(words)[:-1]

"""General knowledge questions a small instruct model already answers: what LoRA tuning must keep.

The real-model demo asks the original model these questions before tuning, trains on its
own answers to the training half (a replay, so the new identity and tool use do not wash
out what it knew) and checks afterwards that the held-out questions it answered right are
still right. The check is whether one of the accepted answers appears in the reply.
"""

from __future__ import annotations

import re

from chatsmith.tasks.common import Example

# (question, accepted answers, lower case)
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of the United Kingdom?", ("london",)),
    ("What is the capital of Russia?", ("moscow",)),
    ("What is the capital of China?", ("beijing",)),
    ("What is the capital of Egypt?", ("cairo",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Greece?", ("athens",)),
    ("What is the capital of Portugal?", ("lisbon",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Which planet is closest to the Sun?", ("mercury",)),
    ("What star is at the center of our solar system?", ("sun",)),
    ("What is the chemical symbol for water?", ("h2o", "h₂o")),
    ("What gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "co2")),
    ("What gas do humans need to breathe to live?", ("oxygen",)),
    ("At what temperature in Celsius does water freeze?", ("0", "zero")),
    ("At what temperature in Celsius does water boil at sea level?", ("100",)),
    ("How many days are there in a week?", ("7", "seven")),
    ("How many months are there in a year?", ("12", "twelve")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("How many continents are there on Earth?", ("7", "seven")),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("What is the longest river in Africa?", ("nile",)),
    ("Who wrote the play Romeo and Juliet?", ("shakespeare",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    ("Who developed the theory of relativity?", ("einstein",)),
    ("Who was the first president of the United States?", ("washington",)),
    ("What is the opposite of hot?", ("cold",)),
    ("What color do you get when you mix blue and yellow?", ("green",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What animal is known as the king of the jungle?", ("lion",)),
    ("What is the largest mammal in the world?", ("blue whale", "whale")),
    ("What do bees make?", ("honey",)),
    ("What is the freezing point of water in Fahrenheit?", ("32",)),
    ("Which organ pumps blood through the human body?", ("heart",)),
    ("What is the hardest natural substance?", ("diamond",)),
    ("What language is mainly spoken in Brazil?", ("portuguese",)),
    ("What currency is used in Japan?", ("yen",)),
    ("What is the square root of 81?", ("9", "nine")),
    ("How many sides does a triangle have?", ("3", "three")),
    ("How many sides does a hexagon have?", ("6", "six")),
    ("What is the main ingredient in guacamole?", ("avocado",)),
    ("Which instrument has 88 keys?", ("piano",)),
    ("What is the smallest prime number?", ("2", "two")),
    ("In which country are the pyramids of Giza?", ("egypt",)),
    ("What is the capital of Australia?", ("canberra",)),
    ("What is the boiling point of water in Fahrenheit?", ("212",)),
    ("Which metal is liquid at room temperature?", ("mercury",)),
    ("What is the name of our galaxy?", ("milky way",)),
    ("What do caterpillars turn into?", ("butterfl", "moth")),
    ("How many hours are there in a day?", ("24", "twenty-four")),
    ("What is the plural of mouse?", ("mice",)),
    ("Which country is home to the kangaroo?", ("australia",)),
    ("What is the primary language spoken in Mexico?", ("spanish",)),
    ("Which organ do humans use to breathe?", ("lung",)),
]


def general_questions(split: str) -> list[Example]:
    """The questions of one split: every third held out (a third, so the retention figure means something)."""
    out = []
    for i, (q, answers) in enumerate(QUESTIONS):
        if ("heldout" if i % 3 == 0 else "train") == split:
            prompt = [{"role": "user", "content": q}]
            out.append(Example("general", prompt, prompt, answers[0], {"accept": list(answers)}))
    return out


def check(ex: Example, reply: str) -> bool:
    """An accepted answer starting a word, and a number not inside a longer one: "7" is not
    found in "129.99967" (the original model once got "how many continents" right that way)."""
    r = reply.lower()
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?![\d])", r) for a in ex.meta["accept"])


def reward(ex: Example, reply: str) -> float:
    return float(check(ex, reply))
